"""Every security-relevant number of securechat, each with the reason for it.

They live in one module so that a reviewer can audit them in one place and so
that docs/security.md can list them; nothing else in the code base hard-codes
a limit, a key size or a timeout.
"""

# --- wire ------------------------------------------------------------------

# The protocol name and version sent in the greeting; a client refuses a
# server whose major version it does not speak.
PROTOCOL_NAME = "securechat"
PROTOCOL_VERSION = 2

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

# The start of an over-long line kept for the report about it: enough for its
# verb, request id and first arguments (a MESSAGE's room, seq and sender);
# the rest of the line is skipped as it arrives, never held.
LONG_LINE_HEAD_BYTES = 256

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

# --- identities and end-to-end encryption ------------------------------------

# RSA-3072 gives 128-bit security, matching Fernet's AES-128; pyca's floor is
# 2048, which is below that.
RSA_BITS = 3072

# The public exponent every RSA implementation expects; small exponents are
# only unsafe with broken padding, and we use PSS and OAEP.
RSA_PUBLIC_EXPONENT = 65537

# Signatures: RSA-PSS with SHA-256 and MGF1-SHA256, salt at maximum length as
# pyca recommends; the message-level authenticity that Fernet's shared key
# cannot provide.
SIGNATURE_HASH = "SHA256"

# Key wrapping: RSA-OAEP with SHA-256; the label binds each wrap to its room,
# epoch and recipient.
OAEP_HASH = "SHA256"

# Login nonces: 32 random bytes, so a login signature is never valid twice.
AUTH_NONCE_BYTES = 32

# RFC 5705 exporter output bound into each login signature: a signature made
# inside one TLS session is useless inside another.
TLS_EXPORTER_LABEL = b"EXPORTER-securechat-login"
TLS_EXPORTER_BYTES = 32

# Message ids: 16 random bytes, unique without coordination.
MESSAGE_ID_BYTES = 16

# Plaintext envelopes are padded to a multiple of 256 bytes, so the server
# learns a message's size only to within a bucket.
PAD_BUCKET = 256

# Rotate a room key after 100 messages or 7 days, as Megolm's defaults do, so
# that one leaked epoch key exposes a bounded part of the history.
ROTATE_AFTER_MESSAGES = 100
ROTATE_AFTER_SECONDS = 7 * 24 * 3600

# The commitment to a room key (in each signed epoch record) is 16 bytes of
# HMAC-SHA256: collision-resistant enough to expose a split view.
KEY_ID_BYTES = 16

# Safety numbers as Signal computes them: 5,200 SHA-512 iterations per side,
# 30 digits per side, 60 in all; slow enough to make grinding a near-collision
# with a chosen key expensive.
SAFETY_NUMBER_ITERATIONS = 5200

# Keystore: scrypt n=2^17, r=8, p=1 (about 128 MiB and 0.4 s here) so an
# offline guess at a stolen keystore's passphrase is expensive. pyca's
# BestAvailableEncryption alone would use PBKDF2 with 2,048 iterations.
SCRYPT_N = 2**17
SCRYPT_R = 8
SCRYPT_P = 1
SCRYPT_SALT_BYTES = 16

# The weakest scrypt cost a keystore file may claim; a header edited to claim
# less is refused, so no one can make a victim's client re-save cheaply.
SCRYPT_MIN_N = 2**14

# --- server limits (defaults; the config file may change them) -------------

# Nicks: 1-24 characters of letters, digits, "-" and "_", starting with a
# letter; ASCII only, so no two nicks can look alike (no homoglyphs).
NICK_PATTERN = r"[A-Za-z][A-Za-z0-9_-]{0,23}"

# Rooms: "#" and 1-32 characters of letters, digits, "-", "_" and ".".
ROOM_PATTERN = r"#[A-Za-z0-9][A-Za-z0-9_.-]{0,31}"

# Topics: 390 characters, as IRC networks commonly allow.
MAX_TOPIC_LENGTH = 390

# Reasons given for kicks and parts.
MAX_REASON_LENGTH = 200

# A room password (only its scrypt hash is stored).
MAX_ROOM_PASSWORD_LENGTH = 128

# Room passwords are hashed with scrypt at a cost that keeps a JOIN cheap for
# the daemon (about 16 MiB, 50 ms) yet makes offline guessing from a stolen
# database slow; compared in constant time.
ROOM_PASSWORD_SCRYPT_N = 2**14

# Rooms one user may belong to, and members one room may have: a team chat
# server, not a broadcast platform; the epoch rotation cost grows with members.
MAX_ROOMS_PER_USER = 100
MAX_MEMBERS_PER_ROOM = 500

# Registration tokens: 16 random bytes, shown once; the server stores only
# their SHA-256.
REGISTRATION_TOKEN_BYTES = 16

# Size of one wrapped room key: an RSA-3072 OAEP ciphertext.
WRAP_BYTES = RSA_BITS // 8

# (The largest token and message follow from the line limit and the
# grammar: securechat.wire.grammar.MAX_TOKEN_BYTES and
# securechat.crypto.envelope.MAX_MESSAGE_BYTES, about 47 KiB of text.)

# Largest signed epoch record (JSON with a few base64 fields).
MAX_EPOCH_RECORD_BYTES = 2048

# History pages: at most 500 messages per request, so one request cannot
# make the daemon build an unbounded reply.
MAX_HISTORY_PAGE = 500

# SYNC sends at most this many messages per room before saying MORE; the
# client pages on with HISTORY.
SYNC_PAGE = 1000

# LOG answers at most this many entries per request (and no more than the
# reply budget); the client asks on from where it stopped.
LOG_PAGE = 500

# WHO and LIST answer at most this many members or rooms per request (about
# 280 KB and 330 KB at worst); the client asks on from the last one. A member
# cannot make the daemon build megabytes for one line of input.
WHO_PAGE = 100
LIST_PAGE = 200

# ... and no reply carries more than about this many bytes of messages, half
# the send-queue limit, so a client reading at full speed is never dropped.
REPLY_BUDGET_BYTES = 512 * 1024

# Flood control: a token bucket per connection. Generous enough for bots and
# pasted text (a human never comes close); it stops runaway clients.
RATE_LINES_PER_SECOND = 200
RATE_BURST_LINES = 400
# Excess lines tolerated (each answered RATE_LIMITED) before disconnecting.
RATE_STRIKES_BEFORE_DISCONNECT = 20

# Connections the kernel queues before the daemon accepts them: after a
# restart every client reconnects at once, and Twisted's default of 50
# overflows, each overflow a SYN retried a second or more later.
LISTEN_BACKLOG = 1024

# Concurrent connections from one IP address (ngircd allows 5; a team behind
# one NAT needs more).
MAX_CONNECTIONS_PER_IP = 20

# Accounts one address may create per hour (a burst of as many, then one
# every 360 s): a team onboarding behind one NAT fits, a script filling the
# accounts table does not.
REGISTRATIONS_PER_HOUR = 10

# Storage budget per user: bytes of messages stored per second sustained, a
# burst of 1 MiB (twenty of the longest messages at once), and 128 MiB per
# UTC day. Within the flood limit alone one member could make the daemon
# store 17 GB an hour; with these, at most 128 MiB a day.
STORE_BYTES_PER_SECOND = 32 * 1024
STORE_BURST_BYTES = 1024 * 1024
STORE_BYTES_PER_DAY = 128 * 1024 * 1024

# How often the day's stored bytes per user are written to the database (so
# a restart keeps them) and, with several daemons, read back (so each sees
# what the others stored). A crash forgets at most this much of the count.
USAGE_SYNC_SECONDS = 10

# Messages are kept this many days; 0 keeps them for ever. A room's owner may
# ask for less (SET retention), never for more.
RETENTION_DAYS = 0

# How often expired messages are deleted, ROOM_PURGE_BATCH per transaction.
RETENTION_CHECK_SECONDS = 3600

# The longest retention a room's owner may ask for (ten years; 0 means the
# server's setting): enough for any team, and the number stays small.
MAX_RETENTION_DAYS = 3650

# Seconds an unauthenticated connection may stay (InspIRCd uses 20).
LOGIN_TIMEOUT_SECONDS = 30

# Idle liveness: PING after this much silence, close if no reply within the
# timeout (ngircd: 120 s and 20 s).
IDLE_PING_SECONDS = 120
PING_TIMEOUT_SECONDS = 20

# Slow readers: abort a connection whose unsent output exceeds 1 MiB
# (InspIRCd's hardsendq) or that has not read for 30 s while output waits.
MAX_SEND_QUEUE_BYTES = 1024 * 1024
MAX_PAUSED_SECONDS = 30

# Under load, group commits start at most every 8 ms: each holds more
# messages, so fewer fsyncs, and each member gets a group's lines in one TLS
# record. An idle daemon commits at once; a busy one adds at most 8 ms, far
# below the ~100 ms at which a person notices a delay.
COMMIT_INTERVAL_SECONDS = 0.008

# Another process (securechat-admin, a backup) holding SQLite's write lock:
# the daemon never waits for it on its reactor thread, but tries again every
# 50 ms, and fails the waiting writes (their clients are told, and may send
# again) once the lock has been held for 5 s, SQLite's usual busy timeout.
WRITE_LOCK_RETRY_SECONDS = 0.05
WRITE_LOCK_GIVE_UP_SECONDS = 5.0

# Deleting a room removes its messages this many per transaction (about
# 10 ms of SQLite work on the reactor thread), so a long history never
# freezes the daemon: a million in one statement took 5 s.
ROOM_PURGE_BATCH = 2000

# The Prometheus endpoint listens here only: room and connection counts are
# metadata; a scraper on another host goes through an SSH tunnel or a proxy.
METRICS_INTERFACE = "127.0.0.1"

# Client console: a send of more lines than this (a paste, usually) is
# confirmed first, as WeeChat and irssi do, so a mis-paste never leaks.
PASTE_CONFIRM_LINES = 5

# Client: seconds the first-contact certificate fetch may take.
FIRST_CONTACT_TIMEOUT_SECONDS = 15

# How soon a running daemon applies a ban made with securechat-admin: it
# checks the database for another process's commits this often.
OPERATOR_POLL_SECONDS = 2

# Several daemons: Redis must accept a connection or answer (a PUBLISH, the
# start as a whole) within this, else it counts as unreachable; a dropped
# connection is retried after 0.1 s, backing off to at most 1 s, so that a
# restarted Redis is found again within about a second.
REDIS_TIMEOUT_SECONDS = 5.0
REDIS_RECONNECT_FIRST_DELAY = 0.1
REDIS_RECONNECT_MAX_DELAY = 1.0

# Several daemons: each says who is online on it this often, and one silent
# for this many beats (killed, or cut off) counts as gone with its users.
PRESENCE_HEARTBEAT_SECONDS = 5
PRESENCE_MISSED_HEARTBEATS = 3

# Several daemons: how long a starting daemon waits for PostgreSQL before
# saying, in one line, that it is unreachable.
DATABASE_CONNECT_TIMEOUT_SECONDS = 5

# Client, room logs: after a member leaves, the current key's holders re-key
# in turn this many seconds apart (the remover first): one rotation, at once.
REKEY_STAGGER_SECONDS = 2.0

# Client: a newcomer whose room key was made before they joined waits this
# long for an online holder to answer before making a new key itself.
KEY_WAIT_SECONDS = 5.0

# Client: a key request nobody answers for this long is told as what it may
# be, a server withholding the request or the answers.
KEY_STALL_SECONDS = 180.0

# Client: the hashes of each room's newest log entries kept, so that a
# message naming its sender's log head that far back is still recognised.
HASHES_KEPT = 4096

# Room logs: who held each epoch's key is kept for this many epochs before
# the current one (the removal warnings look that far back); older ones are
# forgotten, but a client's own holdings, so memory and the saved state do
# not grow with every rotation times every member.
HOLDERS_KEPT_EPOCHS = 64
