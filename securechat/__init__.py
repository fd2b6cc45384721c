"""securechat: an end-to-end encrypted multi-room chat daemon and client."""

__version__ = "0.1.0"
