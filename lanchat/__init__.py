"""lanchat: chat for people who share one local network.

The client lives here, and so does the wire protocol every part shares (lanchat.protocol).
"""

__version__ = "0.1.0"
