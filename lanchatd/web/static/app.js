// lanchat's browser client: protocol v1 (docs/protocol.md) over a WebSocket at /ws.
//
// One text message is one protocol line.  The first is the server's greeting
// ("LANCHAT/1 ready ..."); then hello -> welcome, join -> joined + history, and events.
// Every text from the network is inserted with textContent, never as HTML.
// When the connection drops, the page reconnects with a growing delay and rejoins the
// same room under the same name; messages typed meanwhile wait in an outbox and are
// sent once it is back, and those sent but not yet seen echoed are sent again unless
// the room's history shows they arrived.
"use strict";

(function () {
  const PROTOCOL_VERSION = 1;
  const CLIENT = "lanchat-web/1";
  const MAX_TEXT = 2000;
  const BACKOFF = [1, 2, 4, 8, 15];
  const SEEN_KEEP = 500;

  const $ = (id) => document.getElementById(id);
  const ui = {
    status: $("status"), join: $("join"), pin: $("pin"), pinHint: $("pin-hint"),
    name: $("name"), joinButton: $("join-button"), joinError: $("join-error"),
    chat: $("chat"), roomTitle: $("room-title"), members: $("members"), leave: $("leave"),
    log: $("log"), send: $("send"), text: $("text"), again: $("again"),
    joinAgain: $("join-again"),
  };

  // ------------------------------------------------------------------ language

  const lang = pickLanguage(navigator.languages || [navigator.language || "en"]);
  let strings = {};

  function pickLanguage(list) {
    for (const tag of list) {
      const base = String(tag).toLowerCase().split("-")[0];
      if (base === "nb" || base === "no" || base === "nn") return "nb";
      if (base === "en") return "en";
    }
    return "en";
  }

  function t(key, values) {
    let text = Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : key;
    if (values) {
      text = text.replace(/\{(\w+)\}/g, (all, name) =>
        Object.prototype.hasOwnProperty.call(values, name) ? String(values[name]) : all);
    }
    return text;
  }

  function translatePage() {
    document.documentElement.lang = lang;
    for (const el of document.querySelectorAll("[data-i18n]")) {
      el.textContent = t(el.dataset.i18n);
    }
    document.title = t("title");
    showPinHint();
  }

  const clock = new Intl.DateTimeFormat(lang === "nb" ? "nb-NO" : "en-GB", {
    hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false,
  });

  // ------------------------------------------------------------------ state

  let ws = null;
  let welcome = null;
  let joined = false;
  let me = "";              // my name as the server stored it
  let room = "";
  let wanted = null;        // {pin, name} to join (and rejoin after a drop)
  let joinSent = false;     // this connection's join is on its way (with the hello)
  let joinedBefore = false; // a rejoin, not the first join
  let stopReconnect = false;
  let attempt = 0;
  let retryTimer = null;
  let serverName = "";
  let refusedText = "";     // why the server refused the last connection, if it did
  let retryAt = 0;          // when the next connection attempt starts (Date.now() ms)
  let countdown = null;     // the status line's once-a-second update until then
  let members = [];
  let whoAsked = 0;         // who requests typed by the person, answers not seen yet
  const outbox = [];        // {req, el}: typed, not sent yet
  const unconfirmed = [];   // {req, el}: sent, own echo not seen yet
  const seen = new Map();   // seq -> "ts|from|text" of shown room messages

  // ------------------------------------------------------------------ the log

  function atBottom() {
    return ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 40;
  }

  // The log stays at its last line while the person has not scrolled up, also when it
  // gets shorter (the status line above takes two lines, a phone's keyboard opens).
  // Only the person's own scrolling decides: the event of a scroll made here comes
  // after the layout has moved again, and would read as "scrolled up".
  let stuck = true;
  let autoTop = -1;         // where the last scroll made here left the log
  function toBottom() {
    ui.log.scrollTop = ui.log.scrollHeight;
    autoTop = ui.log.scrollTop;
    stuck = true;
  }
  ui.log.addEventListener("scroll", () => {
    if (ui.log.scrollTop !== autoTop) stuck = atBottom();
  });
  if (typeof ResizeObserver === "function") {
    new ResizeObserver(() => { if (stuck) toBottom(); }).observe(ui.log);
  }

  function addLine(kind, parts, ts) {
    const stick = stuck || atBottom();
    const li = document.createElement("li");
    li.className = kind;
    if (ts !== undefined && ts !== null) {
      const time = document.createElement("time");
      time.className = "time";
      const date = new Date(ts * 1000);
      time.dateTime = date.toISOString();
      time.textContent = clock.format(date);
      li.appendChild(time);
    }
    for (const [cls, text] of parts) {
      // A real space between the parts, so that copying a line, or a screen reader
      // reading it, keeps the words apart.
      if (li.firstChild) li.appendChild(document.createTextNode(" "));
      const span = document.createElement("span");
      span.className = cls;
      span.textContent = text;
      li.appendChild(span);
    }
    ui.log.appendChild(li);
    if (stick) toBottom();
    return li;
  }

  function info(text, ts) { return addLine("info", [["text", text]], ts); }
  function problem(text) { return addLine("problem", [["text", text]]); }

  function setStatus(text) { ui.status.textContent = text; }

  function showPinHint() {
    const low = welcome ? welcome.pin_min : 6;
    const high = welcome ? welcome.pin_max : 12;
    ui.pinHint.textContent = low === high ? t("pin_hint_exact", { min: low })
      : t("pin_hint", { min: low, max: high });
  }

  function showMembers(list) {
    ui.members.textContent = t("members", { names: list.join(", ") });
  }

  // ------------------------------------------------------------------ connection

  function wsAddress() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return scheme + "//" + location.host + "/ws";
  }

  function connect() {
    retryTimer = null;
    stopCountdown();
    welcome = null;
    joined = false;
    joinSent = false;
    setStatus(t("status_connecting"));
    let socket;
    try {
      socket = new WebSocket(wsAddress());
    } catch (err) {
      scheduleReconnect(String(err));
      return;
    }
    ws = socket;
    let greeted = false;
    socket.onmessage = (msg) => {
      if (socket !== ws || typeof msg.data !== "string") return;
      if (!greeted) {
        greeted = true;
        onGreeting(msg.data);
        return;
      }
      let event;
      try {
        event = JSON.parse(msg.data);
      } catch (err) {
        return; // not JSON: nothing a JSON-mode client can use
      }
      if (event && typeof event === "object") onEvent(event);
    };
    socket.onclose = () => {
      if (socket !== ws) return;
      ws = null;
      const wasJoined = joined;
      joined = false;
      updateSendState();
      if (stopReconnect) return;
      if (!greeted) {
        // Refused before the WebSocket opened (full, standby...): ask the page why.
        explainRefusal();
        return;
      }
      scheduleReconnect(wasJoined ? "lost" : "");
    };
  }

  function explainRefusal() {
    // The server says why in standby or when stopped (the WebSocket's first message);
    // refused before that, it is full (503, in the server's language) or the page was
    // opened under a name it does not answer to (421, which says what to do).
    fetch("/", { cache: "no-store" }).then((response) => {
      if (response.ok) return "";
      if (response.status === 503) return t("error_full");
      return response.text();
    }).then((text) => {
      showRefusal(text ? text.trim() : "");
      scheduleReconnect("");
    }, () => scheduleReconnect(""));
  }

  // Why the server refused, in the page's language when it is one the page knows.
  function refusalText(status, text) {
    if (status === "standby") return t("error_standby");
    if (status === "stopped") return t("error_stopped");
    if (status === "full") return t("error_full");
    return text;
  }

  function showRefusal(text) {
    refusedText = text;
    // Said where the person looks: under the Join button until it connects (the status
    // line then says only when the page tries again), else in the status line.
    if (text && !ui.join.hidden) {
      ui.joinError.textContent = text;
    } else {
      setStatus(t("refused", { text: text }));
    }
  }

  function scheduleReconnect(why) {
    if (stopReconnect || retryTimer !== null) return;
    const base = BACKOFF[Math.min(attempt, BACKOFF.length - 1)];
    attempt += 1;
    const seconds = Math.round(base * (0.8 + Math.random() * 0.4) * 10) / 10;
    if (why === "lost") {
      info(t("connection_lost", { seconds: Math.ceil(seconds) }));
    } else if (why === "name_held") {
      info(t("name_held", { seconds: Math.ceil(seconds) }));
    }
    retryAt = Date.now() + seconds * 1000;
    showOffline();
    if (countdown === null) countdown = setInterval(showOffline, 1000);
    retryTimer = setTimeout(connect, seconds * 1000);
  }

  function showOffline() {
    const left = Math.max(1, Math.ceil((retryAt - Date.now()) / 1000));
    const offline = t("status_offline", { seconds: left });
    const why = refusedText && ui.join.hidden ? t("refused", { text: refusedText }) + " " : "";
    const waiting = waitingText();
    setStatus(why + offline + (waiting ? " " + waiting : ""));
  }

  function waitingText() {
    const count = outbox.length + unconfirmed.length;
    if (!count) return "";
    return t(count === 1 ? "status_waiting_one" : "status_waiting", { count: count });
  }

  function stopCountdown() {
    if (countdown !== null) {
      clearInterval(countdown);
      countdown = null;
    }
  }

  function send(obj) {
    if (ws && ws.readyState === WebSocket.OPEN) {
      ws.send(JSON.stringify(obj));
      return true;
    }
    return false;
  }

  function onGreeting(line) {
    const match = /^LANCHAT\/(\d+) (\S+) ?(.*)$/.exec(line);
    if (!match) {
      stopReconnect = true;
      setStatus(t("refused", { text: line.slice(0, 200) }));
      ws.close();
      return;
    }
    if (match[2] !== "ready") {
      showRefusal(refusalText(match[2], match[3]));
      return; // the server closes; onclose schedules the next try
    }
    if (refusedText && ui.joinError.textContent === refusedText) ui.joinError.textContent = "";
    refusedText = "";
    send({ type: "hello", versions: [PROTOCOL_VERSION], client: CLIENT, lang });
    // A rejoin (or a form sent before the connection): the join goes with the hello,
    // one round trip fewer; the server answers both at once.
    if (wanted) joinSent = send({ type: "join", pin: wanted.pin, name: wanted.name });
  }

  // ------------------------------------------------------------------ events

  function onEvent(ev) {
    switch (ev.type) {
      case "welcome": onWelcome(ev); break;
      case "joined": onJoined(ev); break;
      case "message": onMessage(ev); break;
      case "private": onPrivate(ev); break;
      case "presence": onPresence(ev); break;
      case "members": onMembers(ev); break;
      case "state": onState(ev); break;
      case "notice": addLine("notice", [["text", t("notice", { text: ev.text })]], ev.ts); break;
      case "error": onError(ev); break;
      case "bye": onBye(ev); break;
      case "ping": send({ type: "pong", token: ev.token || "" }); break;
      default: break; // newer servers may add events: ignore them
    }
  }

  function onWelcome(ev) {
    welcome = ev;
    serverName = ev.name || "";
    setStatus(t("status_connected", { server: serverName }));
    showPinHint();
    if (wanted && !joinSent) send({ type: "join", pin: wanted.pin, name: wanted.name });
  }

  function onJoined(ev) {
    joined = true;
    attempt = 0;
    me = ev.name;
    room = ev.room;
    stopReconnect = false;
    ui.join.hidden = true;
    ui.chat.hidden = false;
    ui.again.hidden = true;
    ui.send.hidden = false;
    ui.leave.hidden = false;
    ui.roomTitle.textContent = t("room_title", { pin: room });
    members = (ev.members || []).slice();
    showMembers(members);
    info(t(joinedBefore ? "joined_again" : "you_joined", { pin: room, name: me }));
    joinedBefore = true;
    setStatus(t("status_connected", { server: serverName }));
    updateSendState();
    // What waits is sent after the history has been seen (it follows joined at once,
    // so a zero-delay task runs after those messages).
    setTimeout(flushOutbox, 0);
    ui.text.focus();
  }

  function messageKey(ev) { return ev.ts + "|" + ev.from + "|" + ev.text; }

  function onMessage(ev) {
    const key = messageKey(ev);
    if (ev.history && seen.get(ev.seq) === key) {
      confirmOwn(ev);
      return; // shown before this reconnection
    }
    seen.set(ev.seq, key);
    if (seen.size > SEEN_KEEP) seen.delete(seen.keys().next().value);
    confirmOwn(ev); // my own, back from the server: delivered, no longer pending
    const own = ev.from === me ? " own" : "";
    if (ev.action) {
      addLine("action" + own, [["who", "* " + ev.from], ["text", ev.text]], ev.ts);
    } else {
      addLine("message" + own, [["who", ev.from + ":"], ["text", ev.text]], ev.ts);
    }
  }

  function confirmOwn(ev) {
    if (ev.from !== me) return false;
    const index = unconfirmed.findIndex((item) => item.req.type === "say"
      && item.req.text === ev.text && Boolean(item.req.action) === Boolean(ev.action));
    if (index < 0) return false;
    const [item] = unconfirmed.splice(index, 1);
    if (item.el) item.el.remove();
    updateSendState();
    return true;
  }

  function onPrivate(ev) {
    const mine = ev.from === me;
    const index = unconfirmed.findIndex((item) => item.req.type === "msg"
      && item.req.text === ev.text);
    if (mine && index >= 0) {
      const [item] = unconfirmed.splice(index, 1);
      if (item.el) item.el.remove();
    }
    const tag = mine && ev.to !== me ? t("private_to", { name: ev.to })
      : t("private_from", { name: ev.from });
    addLine("private" + (mine ? " own" : ""), [["tag", "(" + tag + ")"],
      ["who", ev.from + ":"], ["text", ev.text]], ev.ts);
  }

  function onPresence(ev) {
    let text;
    if (ev.event === "join") {
      text = t("presence_join", { name: ev.name });
    } else if (ev.reason) {
      text = t("presence_leave_reason", { name: ev.name, reason: ev.reason });
    } else {
      text = t("presence_leave", { name: ev.name });
    }
    info(text, ev.ts);
    // The member list is kept from presence events: asking "who" each time would
    // spend the person's message budget (the server's rate limit counts it).
    const key = String(ev.name).toLowerCase();
    const others = members.filter((name) => name.toLowerCase() !== key);
    members = ev.event === "join" ? others.concat([ev.name]) : others;
    members.sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
    showMembers(members);
  }

  function onMembers(ev) {
    members = (ev.members || []).slice();
    showMembers(members);
    if (whoAsked > 0) {
      whoAsked -= 1;
      info(t("who", { names: members.join(", ") }));
    }
  }

  function onState(ev) {
    const key = "state_" + ev.state;
    addLine("notice", [["text", Object.prototype.hasOwnProperty.call(strings, key)
      ? t(key) : ev.text]], ev.ts);
  }

  function onError(ev) {
    const code = ev.code;
    if (ev.ref === "join") {
      onJoinError(ev);
      return;
    }
    const index = unconfirmed.findIndex((item) => item.req.type === ev.ref);
    const unsent = index >= 0 ? unconfirmed.splice(index, 1)[0] : null;
    if (unsent && unsent.el) unsent.el.remove();
    updateSendState();
    let text;
    if (code === "stopped") text = t("error_stopped_say");
    else if (code === "rate_limited") text = t("error_rate_limited");
    else if (code === "no_such_member") text = t("error_no_such_member", { name: unsent ? unsent.req.to : "?" });
    else if (code === "invalid_text") text = t("error_invalid_text");
    else text = t("error_other", { text: ev.message });
    problem(text);
  }

  function onJoinError(ev) {
    const code = ev.code;
    const low = welcome ? welcome.pin_min : 6;
    const high = welcome ? welcome.pin_max : 12;
    if (joinedBefore && code === "name_taken") {
      // Our old connection may not be gone yet on the server: wait and try again.
      const socket = ws;
      ws = null;
      if (socket) socket.close();
      scheduleReconnect("name_held");
      return;
    }
    let text;
    if (code === "name_taken") text = t("error_name_taken", { name: wanted ? wanted.name : "" });
    else if (code === "invalid_pin") text = t("error_invalid_pin", { min: low, max: high });
    else if (code === "invalid_name") text = t("error_invalid_name");
    else if (code === "join_rate_limited") text = t("error_join_rate_limited");
    else if (code === "standby") text = t("error_standby");
    else if (code === "stopped") text = t("error_stopped");
    else text = t("error_other", { text: ev.message });
    if (joinedBefore) {
      problem(text);
    } else {
      wanted = null;
      ui.joinError.textContent = text;
      ui.joinButton.disabled = false;
      // Back to the field to correct, for a person on the keyboard or a phone.
      const field = code === "invalid_pin" ? ui.pin
        : (code === "name_taken" || code === "invalid_name") ? ui.name : null;
      if (field) {
        field.focus();
        field.select();
      }
    }
  }

  function onBye(ev) {
    const detail = ev.detail || "";
    let text;
    let final = false;
    if (ev.reason === "kicked") {
      text = detail ? t("bye_kicked_reason", { reason: detail }) : t("bye_kicked");
      final = true;
    } else if (ev.reason === "room_closed") {
      text = detail ? t("bye_room_closed_reason", { reason: detail }) : t("bye_room_closed");
      final = true;
    } else if (ev.reason === "quit") {
      text = t("bye_quit");
      final = true;
    } else if (ev.reason === "shutdown") {
      text = t("bye_shutdown");
    } else {
      text = t("bye_other", { text: ev.message });
    }
    addLine(final ? "notice" : "info", [["text", text]]);
    if (final) {
      stopReconnect = true;
      joined = false;
      updateSendState();
      setStatus(text);
      ui.send.hidden = true;  // nothing typed here would go anywhere now
      ui.leave.hidden = true;
      ui.members.textContent = "";
      ui.again.hidden = false;
      ui.joinAgain.focus();
    }
  }

  // ------------------------------------------------------------------ typing

  function updateSendState() {
    if (joined || stopReconnect) return;
    if (retryTimer !== null) {
      showOffline(); // the countdown and what waits, in one line
    } else if (waitingText()) {
      setStatus(waitingText());
    }
  }

  function queue(req, shown) {
    const li = addLine("pending own", [...shown, ["tag", "(" + t("pending") + ")"]]);
    outbox.push({ req: req, el: li });
    updateSendState();
    flushOutbox();
  }

  function flushOutbox() {
    if (!joined) return;
    // Unconfirmed ones of an earlier connection go first, unless the history showed
    // them delivered (confirmOwn removed those).
    const again = unconfirmed.splice(0, unconfirmed.length);
    for (const item of again.concat(outbox.splice(0, outbox.length))) {
      if (!send(item.req)) {
        outbox.push(item);
        continue;
      }
      unconfirmed.push(item);
    }
    updateSendState();
  }

  function onSubmitText(event) {
    event.preventDefault();
    const line = ui.text.value;
    if (!line.trim()) return;
    if (line.length > MAX_TEXT + 10) {
      problem(t("too_long"));
      return;
    }
    const trimmed = line.trim();
    if (trimmed.startsWith("/")) {
      const space = trimmed.indexOf(" ");
      const command = (space < 0 ? trimmed : trimmed.slice(0, space)).toLowerCase();
      const rest = space < 0 ? "" : trimmed.slice(space + 1).trim();
      if (command === "/me" && rest) {
        queue({ type: "say", text: rest, action: true }, [["who", "* " + me], ["text", rest]]);
      } else if (command === "/msg") {
        const gap = rest.indexOf(" ");
        if (gap < 1 || !rest.slice(gap + 1).trim()) {
          problem(t("usage_msg"));
          return;
        }
        const to = rest.slice(0, gap);
        const text = rest.slice(gap + 1).trim();
        queue({ type: "msg", to: to, text: text },
          [["tag", "(" + t("private_to", { name: to }) + ")"], ["text", text]]);
      } else if (command === "/who") {
        if (send({ type: "who" })) whoAsked += 1;
      } else if (command === "/quit") {
        onLeave();
      } else if (command === "/help") {
        info(t("help"));
      } else {
        problem(t("unknown_command", { command: command }));
        return;
      }
    } else {
      queue({ type: "say", text: line }, [["who", me + ":"], ["text", line]]);
    }
    ui.text.value = "";
  }

  function onSubmitJoin(event) {
    event.preventDefault();
    const pin = ui.pin.value.trim();
    const name = ui.name.value.trim();
    ui.joinError.textContent = "";
    if (!/^[0-9]+$/.test(pin)) {
      const low = welcome ? welcome.pin_min : 6;
      const high = welcome ? welcome.pin_max : 12;
      ui.joinError.textContent = t("error_invalid_pin", { min: low, max: high });
      ui.pin.focus();
      return;
    }
    if (!name) {
      ui.joinError.textContent = t("error_invalid_name");
      ui.name.focus();
      return;
    }
    wanted = { pin: pin, name: name };
    try {
      sessionStorage.setItem("lanchat", JSON.stringify(wanted));
    } catch (err) { /* private mode: no memory across reloads */ }
    stopReconnect = false;
    ui.joinButton.disabled = true;
    if (welcome) {
      send({ type: "join", pin: pin, name: name });
    } else if (!ws && retryTimer === null) {
      connect();
    }
  }

  function onLeave() {
    stopReconnect = true;
    if (retryTimer !== null) {
      clearTimeout(retryTimer);
      retryTimer = null;
    }
    stopCountdown();
    // Not connected: there is no server to say goodbye to, so leave at once.
    if (!send({ type: "quit" })) onBye({ reason: "quit" });
  }

  function onJoinAgain() {
    ui.chat.hidden = true;
    ui.join.hidden = false;
    ui.joinButton.disabled = false;
    joinedBefore = false;
    wanted = null;
    stopReconnect = false;
    ui.log.textContent = "";
    seen.clear();
    if (!ws) connect();
    ui.pin.focus();
  }

  // ------------------------------------------------------------------ start

  function start() {
    translatePage();
    ui.join.addEventListener("submit", onSubmitJoin);
    ui.send.addEventListener("submit", onSubmitText);
    ui.leave.addEventListener("click", onLeave);
    ui.joinAgain.addEventListener("click", onJoinAgain);
    try {
      const saved = JSON.parse(sessionStorage.getItem("lanchat") || "null");
      if (saved && typeof saved.pin === "string" && typeof saved.name === "string") {
        ui.pin.value = saved.pin;
        ui.name.value = saved.name;
      }
    } catch (err) { /* nothing saved */ }
    ui.pin.focus();
    connect();
  }

  fetch("/lang/" + lang + ".json").then((r) => r.json()).then((table) => {
    strings = table;
  }, () => {}).then(start);
})();
