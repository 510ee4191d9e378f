"""The page in a real headless Chromium: what a person sees and does.

Each test saves a screenshot under tests/artifacts/web/ (git-ignored), for a person to
look at: a test can check that a line is there, not that the page looks right.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any, Callable

import pytest
from lanchat_testing import Daemon, env_with_repo
from selenium.common.exceptions import NoAlertPresentException, TimeoutException
from selenium.webdriver.common.by import By
from selenium.webdriver.common.keys import Keys
from selenium.webdriver.support.ui import WebDriverWait
from web_testing import CuttableProxy, browser, screenshot

WAIT = 20.0

pytestmark = pytest.mark.slow


@pytest.fixture
def chromium() -> Iterator[Callable[..., Any]]:
    """``chromium(width=, height=, language=)`` -> a driver; all quit at the end."""
    stack: list[Any] = []

    def start(**kw: Any) -> Any:
        manager = browser(**kw)
        driver = manager.__enter__()
        stack.append(manager)
        return driver

    yield start
    for manager in reversed(stack):
        manager.__exit__(None, None, None)


def until(driver: Any, what: Callable[[Any], Any], timeout: float = WAIT,
          message: str = "") -> Any:
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(what)
    except TimeoutException:
        screenshot(driver, "timeout")
        raise AssertionError(f"{message or what}: not within {timeout} s; page log: "
                             f"{log_lines(driver)}; status: {status(driver)!r}") from None


def status(driver: Any) -> str:
    return str(driver.find_element(By.ID, "status").text)


def log_lines(driver: Any) -> list[str]:
    return [str(li.text) for li in driver.find_elements(By.CSS_SELECTOR, "#log li")]


def message_texts(driver: Any) -> list[str]:
    return [str(el.text) for el in driver.find_elements(
        By.CSS_SELECTOR, "#log li.message .text, #log li.action .text")]


def join(driver: Any, where: Daemon | str, pin: str, name: str, shot: str = "") -> None:
    """Open the page (the daemon's, or another address) and join, with the keyboard
    only (Tab, typing, Enter)."""
    page = where if isinstance(where, str) else where.page
    assert page is not None
    driver.get(page)
    until(driver, lambda d: status(d).startswith(("Connected", "Tilkoblet")),
          message="the page connects")
    if shot:
        screenshot(driver, shot)
    pin_field = driver.switch_to.active_element  # the page focuses the PIN field
    assert pin_field.get_attribute("id") == "pin"
    pin_field.send_keys(pin, Keys.TAB)
    driver.switch_to.active_element.send_keys(name, Keys.ENTER)
    until(driver, lambda d: d.find_element(By.ID, "chat").is_displayed(),
          message=f"{name} joins")
    until(driver, lambda d: d.switch_to.active_element.get_attribute("id") == "text",
          message="the message field has the focus after joining")


def say(driver: Any, text: str) -> None:
    field = driver.find_element(By.ID, "text")
    field.send_keys(text, Keys.ENTER)


def test_two_browsers_and_nc_share_a_room_in_order(start_daemon: Callable[..., Daemon],
                                                   chromium: Callable[..., Any]) -> None:
    daemon = start_daemon()
    ann = chromium()
    ben = chromium()
    join(ann, daemon, "2024", "ann", shot="join")
    join(ben, daemon, "2024", "ben")
    nc = daemon.text_client()
    nc.join("2024", "nils")
    until(ann, lambda d: any("nils joined" in line for line in log_lines(d)))
    said: list[str] = []

    def has_all(driver: Any) -> bool:
        return len(message_texts(driver)) >= len(said)

    for i in range(3):
        say(ann, f"ann says {i}")
        said.append(f"ann says {i}")
        until(ben, has_all)
        say(ben, f"ben says {i}")
        said.append(f"ben says {i}")
        until(ann, has_all)
        nc.send_line(f"nils says {i}")
        said.append(f"nils says {i}")
        until(ann, has_all)
    for driver in (ann, ben):
        until(driver, lambda d: message_texts(d) == said, message="every line, in order")
    seen = [nc.read_until(lambda line, s=s: line.endswith(s)) for s in said
            if not s.startswith("nils")]
    assert [line.split("] ", 1)[1] for line in seen] == [
        f"{s.split()[0]}: {s}" for s in said if not s.startswith("nils")]
    # who, /me and a private message, typed as a person would.
    say(ann, "/me waves")
    until(ben, lambda d: any(line.endswith("* ann waves") for line in log_lines(d)))
    say(ann, "/msg ben only for you")
    until(ben, lambda d: any("(private from ann)" in line and "only for you" in line
                             for line in log_lines(d)))
    say(ann, "/who")
    until(ann, lambda d: any(line == "Here: ann, ben, nils" for line in log_lines(d)))
    assert "Here: ann, ben, nils" in ann.find_element(By.ID, "members").text
    screenshot(ann, "two-browsers-ann")
    screenshot(ben, "two-browsers-ben")


def test_a_browser_survives_a_restart_and_loses_nothing_typed(
        start_daemon: Callable[..., Daemon], chromium: Callable[..., Any]) -> None:
    first = start_daemon()
    assert first.http is not None
    chat_port, web_port = first.tcp[1], first.http[1]
    ann = chromium()
    join(ann, first, "7777", "ann")
    say(ann, "before the restart")
    until(ann, lambda d: message_texts(d) == ["before the restart"])
    first.stop()
    until(ann, lambda d: any(line == "The server is shutting down." for line in log_lines(d)))
    say(ann, "typed while it was down")
    until(ann, lambda d: "waiting to be sent" in " ".join(log_lines(d)))
    # The same ports, as a service manager would restart it.
    second = start_daemon(args=["--port", str(chat_port), "--http-port", str(web_port)])
    bob = second.json_client()
    assert bob.join("7777", "bob")["type"] == "joined"
    got = bob.recv_type("message", timeout=WAIT)
    assert got["from"] == "ann" and got["text"] == "typed while it was down"
    until(ann, lambda d: any("back in room 7777 as ann" in line for line in log_lines(d)))
    until(ann, lambda d: message_texts(d) == ["before the restart",
                                              "typed while it was down"])
    assert "waiting to be sent" not in " ".join(log_lines(ann))
    bob.say("welcome back")
    until(ann, lambda d: message_texts(d)[-1:] == ["welcome back"])
    screenshot(ann, "restart")


def test_a_late_browser_sees_the_rooms_history(start_daemon: Callable[..., Daemon],
                                              chromium: Callable[..., Any]) -> None:
    daemon = start_daemon()
    early = daemon.json_client()
    early.join("2718", "early")
    for text in ("first", "second", "third"):
        early.say(text)
    assert [early.recv_type("message")["text"] for _ in range(3)] == [
        "first", "second", "third"]
    ann = chromium()
    join(ann, daemon, "2718", "ann")
    until(ann, lambda d: message_texts(d) == ["first", "second", "third"])
    assert "Here: ann, early" in ann.find_element(By.ID, "members").text
    early.say("live")
    until(ann, lambda d: message_texts(d) == ["first", "second", "third", "live"])


def test_markup_in_a_message_is_shown_as_text_and_runs_nothing(
        start_daemon: Callable[..., Daemon], chromium: Callable[..., Any]) -> None:
    daemon = start_daemon()
    ann = chromium()
    join(ann, daemon, "1337", "ann")
    mallory = daemon.json_client()
    # Markup in the name as well (a name may not start with "<", docs/protocol.md §7).
    assert mallory.join("1337", "mal<b>lory</b>")["type"] == "joined"
    attacks = ["<img src=x onerror=alert(1)>",
               '<img src=x onerror="document.title=\'pwned\'">',
               "<script>alert(2)</script>"]
    for text in attacks:
        mallory.say(text)
    say(ann, "<img src=x onerror=alert(3)>")
    until(ann, lambda d: len(message_texts(d)) == 4)
    assert message_texts(ann) == [*attacks, "<img src=x onerror=alert(3)>"]
    assert ann.find_elements(By.CSS_SELECTOR, "#log img, #log script, #log b") == []
    # An image that cannot load either, asked for after the messages were shown: once
    # its error is reported, an onerror of theirs would have fired (no fixed sleep).
    assert ann.execute_async_script(
        "const done = arguments[arguments.length - 1], probe = new Image();"
        "probe.onerror = () => done('error'); probe.onload = () => done('loaded');"
        "probe.src = 'x';") == "error"
    with pytest.raises(NoAlertPresentException):
        ann.switch_to.alert.text  # noqa: B018
    assert ann.title != "pwned"
    assert any("mal<b>lory</b> joined" in line for line in log_lines(ann))
    problems = [entry for entry in ann.get_log("browser") if entry["level"] == "SEVERE"]
    assert not [p for p in problems if "Content Security Policy" in p["message"]], problems
    screenshot(ann, "markup-as-text")


def test_a_phone_screen_shows_the_input_and_the_last_message(
        start_daemon: Callable[..., Daemon], chromium: Callable[..., Any]) -> None:
    daemon = start_daemon()
    phone = chromium(width=390, height=844, language="nb-NO", mobile=True)
    join(phone, daemon, "4711", "per", shot="phone-join")
    assert phone.find_element(By.ID, "join-button").get_attribute("textContent") == "Bli med"
    assert phone.find_element(By.ID, "room-title").text == "Rom 4711"
    friend = daemon.json_client()
    friend.join("4711", "kari")
    for i in range(20):  # the burst one member may send at once
        friend.say(f"melding nummer {i} med litt tekst så linjen blir lang nok til å brytes")
    until(phone, lambda d: len(message_texts(d)) == 20)
    field = phone.find_element(By.ID, "text")
    last = phone.find_elements(By.CSS_SELECTOR, "#log li")[-1]
    width, height = phone.execute_script("return [innerWidth, innerHeight]")
    assert width <= 390

    def on_screen(element: Any) -> bool:
        box = phone.execute_script("const r = arguments[0].getBoundingClientRect();"
                                   "return [r.left, r.top, r.right, r.bottom];", element)
        return bool(box[0] >= 0 and box[1] >= 0 and box[2] <= width and box[3] <= height)

    until(phone, lambda d: on_screen(last), message="the last message is on screen")
    assert on_screen(field) and field.is_displayed()
    assert phone.execute_script("return document.documentElement.scrollWidth") <= width
    screenshot(phone, "phone-light")
    phone.execute_cdp_cmd("Emulation.setEmulatedMedia", {
        "features": [{"name": "prefers-color-scheme", "value": "dark"}]})
    background = phone.execute_script("return getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(21, 23, 21)"
    screenshot(phone, "phone-dark")


def lanchatctl(daemon: Daemon, *args: str) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "lanchatctl", "--socket", str(daemon.control_path), *args],
        capture_output=True, text=True, env=env_with_repo(), timeout=20)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_states_and_a_kick_are_told_plainly(start_daemon: Callable[..., Daemon],
                                             chromium: Callable[..., Any]) -> None:
    daemon = start_daemon()
    ann = chromium()
    join(ann, daemon, "9090", "ann")
    lanchatctl(daemon, "standby")
    until(ann, lambda d: any("The server is in standby: members keep chatting" in line
                             for line in log_lines(d)))
    lanchatctl(daemon, "stop")
    until(ann, lambda d: any("The server is stopped" in line for line in log_lines(d)))
    say(ann, "anyone?")
    until(ann, lambda d: any(line == "Not delivered: the server is stopped."
                             for line in log_lines(d)))
    lanchatctl(daemon, "start")
    lanchatctl(daemon, "kick", "9090", "ann", "--reason", "time for class")
    until(ann, lambda d: any(line == "The administrator removed you from the room: "
                                     "time for class" for line in log_lines(d)))
    until(ann, lambda d: d.find_element(By.ID, "join-again").is_displayed())
    assert ann.switch_to.active_element.get_attribute("id") == "join-again"
    time.sleep(1.5)  # past the first reconnection delay: a kicked member stays out
    assert not any("back in room" in line for line in log_lines(ann))
    screenshot(ann, "kicked")
    ann.switch_to.active_element.send_keys(Keys.ENTER)  # "Join again", by keyboard
    until(ann, lambda d: d.find_element(By.ID, "join").is_displayed())
    assert ann.find_element(By.ID, "pin").get_attribute("value") == "9090"


def test_a_browser_and_the_lanchat_client_chat(start_daemon: Callable[..., Daemon],
                                               chromium: Callable[..., Any]) -> None:
    """The issue's end: the page's address from the readiness line, a lanchat user."""
    daemon = start_daemon()
    assert daemon.page is not None and daemon.ready_line.split(" page=")[1].startswith(
        daemon.page)
    ann = chromium()
    join(ann, daemon, "3141", "ann")
    client = subprocess.Popen(
        [sys.executable, "-m", "lanchat", "--server", f"127.0.0.1:{daemon.tcp[1]}",
         "--pin", "3141", "--name", "lars", "--plain"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=env_with_repo())
    seen: list[str] = []
    reader = threading.Thread(target=lambda: seen.extend(iter(client.stdout.readline, "")),
                              daemon=True)
    reader.start()
    try:
        until(ann, lambda d: any("lars joined" in line for line in log_lines(d)))
        assert client.stdin is not None
        client.stdin.write("hello from the terminal\n")
        client.stdin.flush()
        until(ann, lambda d: message_texts(d) == ["hello from the terminal"])
        say(ann, "hello from the browser")
        deadline = time.monotonic() + WAIT
        while not any("ann: hello from the browser" in line for line in seen):
            assert time.monotonic() < deadline, seen
            time.sleep(0.05)  # the reader thread fills ``seen``; bounded by the deadline
        screenshot(ann, "with-lanchat")
    finally:
        client.terminate()
        client.wait(10)


def test_a_network_blip_rejoins_without_showing_anything_twice(
        start_daemon: Callable[..., Daemon], chromium: Callable[..., Any]) -> None:
    daemon = start_daemon()
    assert daemon.http is not None
    proxy = CuttableProxy(daemon.http)
    try:
        ann = chromium()
        join(ann, proxy.page, "1618", "ann")
        bob = daemon.json_client()
        bob.join("1618", "bob")
        bob.say("before the blip")
        say(ann, "me too")
        until(ann, lambda d: message_texts(d) == ["before the blip", "me too"])
        proxy.cut()
        until(ann, lambda d: any(line.startswith("Connection lost.") for line in log_lines(d)))
        until(ann, lambda d: any("back in room 1618 as ann" in line for line in log_lines(d)))
        # The history replayed on rejoining holds both messages: they are not shown again.
        bob.say("after the blip")
        until(ann, lambda d: message_texts(d)[-1:] == ["after the blip"])
        assert message_texts(ann) == ["before the blip", "me too", "after the blip"]
        screenshot(ann, "blip")
    finally:
        proxy.close()



VIEWPORTS = {
    # A phone (390 x 844 CSS pixels, touch) whose browser speaks Norwegian, and a
    # desktop window in English.
    "phone": {"width": 390, "height": 844, "language": "nb-NO", "mobile": True},
    "desktop": {"width": 1280, "height": 800, "language": "en-US"},
}


def last_line_in_view(driver: Any) -> bool:
    """True when the end of the log's last line is in sight: inside the window and the
    log's visible part (not scrolled away, not under the bars).  A line taller than the
    log cannot be seen whole; its end is what a person reads last."""
    return bool(driver.execute_script(
        "const items = document.querySelectorAll('#log li');"
        "const r = items[items.length - 1].getBoundingClientRect();"
        "const log = document.getElementById('log').getBoundingClientRect();"
        "return r.bottom > log.top && r.bottom <= Math.min(innerHeight, log.bottom) + 1"
        " && r.left >= 0 && r.right <= innerWidth;"))


def no_sideways_scroll(driver: Any) -> bool:
    return bool(driver.execute_script(
        "return document.documentElement.scrollWidth <= innerWidth"))


@pytest.mark.parametrize("viewport", sorted(VIEWPORTS))
def test_a_person_joins_in_standby_mistypes_the_pin_chats_and_rides_a_restart(
        viewport: str, start_daemon: Callable[..., Daemon],
        chromium: Callable[..., Any]) -> None:
    """What a person meets, start to end, on a phone and on a desktop; each step is a
    screenshot (``person-<viewport>-<step>.png``) for a person to look at."""
    nb = VIEWPORTS[viewport]["language"] == "nb-NO"
    first = start_daemon(args=["--initial-state", "standby"])
    assert first.http is not None
    chat_port, web_port = first.tcp[1], first.http[1]
    person = chromium(**VIEWPORTS[viewport])
    shot = f"person-{viewport}"
    # 1. The server is in standby: the page loads and says so.
    person.get(first.page)
    until(person, lambda d: d.find_element(By.ID, "pin").is_displayed())
    standby = ("Serveren er i beredskap og slipper ingen nye inn. Prøv igjen senere." if nb
               else "The server is in standby and accepts nobody new. Try again later.")
    until(person, lambda d: d.find_element(By.ID, "join-error").text == standby,
          message="the page says, in its language, that the server is in standby")
    assert status(person).startswith(("Not connected. Trying again in",
                                      "Ikke tilkoblet. Prøver igjen om"))
    screenshot(person, f"{shot}-1-standby")
    # 2. The administrator starts it: the page connects by itself; a wrong PIN.
    lanchatctl(first, "start")
    until(person, lambda d: status(d).startswith(("Connected", "Tilkoblet")), timeout=30)
    assert person.find_element(By.ID, "join-error").text == ""
    person.find_element(By.ID, "pin").send_keys("12")
    person.find_element(By.ID, "name").send_keys("Åse" if nb else "Ann", Keys.ENTER)
    until(person, lambda d: d.find_element(By.ID, "join-error").text != "")
    assert person.find_element(By.ID, "join-error").text == (
        "Romkoden ble ikke godtatt: en romkode er 4 til 12 sifre." if nb
        else "That PIN was not accepted: a room PIN is 4 to 12 digits.")
    assert person.switch_to.active_element.get_attribute("id") == "pin"  # to correct it
    screenshot(person, f"{shot}-2-wrong-pin")
    # 3. The right PIN; a friend in the room; long messages.
    person.switch_to.active_element.send_keys("4711", Keys.ENTER)  # replaces the selection
    until(person, lambda d: d.find_element(By.ID, "chat").is_displayed())
    friend = first.json_client()
    friend.join("4711", "kari")
    long_word = "x" * 300
    long_text = ("ord " * 450).strip()
    friend.say(long_word)
    say(person, long_text)
    until(person, lambda d: len(message_texts(d)) == 2)
    assert message_texts(person) == [long_word, long_text]
    assert no_sideways_scroll(person)
    until(person, last_line_in_view, message="the last message is in view")
    screenshot(person, f"{shot}-3-long-messages")
    # Nothing went wrong on the way that the person does not see: no failed load (an
    # icon, a catalogue), no policy violation, no script error.
    assert [e for e in person.get_log("browser") if e["level"] == "SEVERE"] == []
    # 4. The daemon restarts: the page says so, keeps what is typed, rejoins.
    first.stop()
    until(person, lambda d: any(line in ("The server is shutting down.",
                                         "Serveren slås av.") for line in log_lines(d)))
    say(person, "typed while it was down")
    waiting = "1 melding venter på å bli sendt." if nb else "1 message waits to be sent."
    until(person, lambda d: status(d).startswith(("Not connected. Trying again in ",
                                                  "Ikke tilkoblet. Prøver igjen om "))
          and status(d).endswith(waiting), message="the status line says both")
    until(person, last_line_in_view, message="what waits to be sent is in view")
    screenshot(person, f"{shot}-4-down")
    second = start_daemon(args=["--port", str(chat_port), "--http-port", str(web_port)])
    bob = second.json_client()
    bob.join("4711", "bob")
    assert bob.recv_type("message", timeout=WAIT)["text"] == "typed while it was down"
    until(person, lambda d: message_texts(d)[-1:] == ["typed while it was down"])
    until(person, last_line_in_view, message="the last message is in view")
    screenshot(person, f"{shot}-5-back")
