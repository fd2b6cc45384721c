"""Every security-relevant number of securechat, each with the reason for it.

They live in one module so that a reviewer can audit them in one place and so
that docs/security.md can list them; nothing else in the code base hard-codes
a limit, a key size or a timeout.
"""

# --- wire ------------------------------------------------------------------

# The protocol name and version sent in the greeting; a client refuses a
# server whose major version it does not speak.
PROTOCOL_NAME = "securechat"
PROTOCOL_VERSION = 1

# 64 KiB per line once authenticated: room for a 32 KiB attachment chunk as a
# Fernet token (about 44 KB) plus its signature, and no more.
MAX_LINE_AUTHENTICATED = 64 * 1024

# 4 KiB before login: an anonymous peer needs only the greeting exchange and a
# registration (two 3072-bit public keys, about 1.2 KB of base64 together), so
# it gets no room to make us buffer large lines (ejabberd uses 8 KiB).
MAX_LINE_UNAUTHENTICATED = 4 * 1024

# Request ids are chosen by the requester; 32 characters hold a UUID or a
# counter with a prefix and keep error replies short.
MAX_REQUEST_ID_LENGTH = 32

# PING may carry an opaque payload (a client's timestamp, for lag); 64 bytes is
# plenty for that and keeps PONG from becoming an amplifier.
MAX_PING_PAYLOAD = 64

# Seconds a connection we chose to close may keep its socket while its peer
# reads our last words; after that it is aborted, since loseConnection() never
# completes against a peer that does not read.
CLOSE_GRACE_SECONDS = 5.0

# --- TLS -------------------------------------------------------------------

# ECDHE key exchange with AEAD ciphers only: forward secrecy, and none of the
# CBC or static-RSA suites that Twisted's default list still offers. TLS 1.3
# suites are all AEAD and are not affected by this string.
TLS_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"

# TLS 1.2 is the oldest version without known protocol-level breaks; 1.3 is
# negotiated whenever the client offers it.
TLS_MINIMUM_VERSION = "TLSv1_2"

# Lifetime of a generated self-signed certificate; clients pin its fingerprint,
# so a short life would only force needless re-pinning. Operators with a CA
# certificate renew through their ACME client instead.
SELF_SIGNED_VALID_DAYS = 5 * 365

# P-256 for the generated certificate: 128-bit security, supported by every
# TLS 1.2+ client, and far cheaper per handshake than RSA-3072.
SELF_SIGNED_CURVE = "SECP256R1"

# --- files -----------------------------------------------------------------

# The data dir holds the database and the TLS private key: owner only.
DATA_DIR_MODE = 0o700

# Private keys and databases: owner read/write only.
PRIVATE_FILE_MODE = 0o600
