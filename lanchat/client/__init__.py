"""The lanchat terminal client.

The parts, from the wire up:

- ``session``: the client's side of one chat session, sans-I/O (handshake, the queue of
  messages waiting to be delivered, pacing under the server's rate limit, reconnect
  backoff, keep-alive), driven with explicit ``now``.
- ``connection``: the TCP socket of a session in a ``selectors`` loop, reconnecting.
- ``discovery``: finding servers on the LAN with the UDP probe.
- ``joining``: choosing a server and asking for the room PIN and name.
- ``plain``: the line mode for pipes and scripts; ``tui``: the curses interface, with
  its model in ``view`` (the message pane) and ``lineedit`` (the input line).
- ``messages``: the sentences shown about the session, shared by both interfaces.
- ``options``, ``settings``: what the person asked for; the settings file and the
  remembered last server.
- ``i18n``, ``msgfmt``: translations through gettext, and the catalogue compiler the
  build uses.

docs/client.md describes the client from the person's side.
"""
