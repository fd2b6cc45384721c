from twisted.application.service import ServiceMaker

securechat = ServiceMaker(
    "securechat",
    "securechat.tap",
    "End-to-end encrypted chat daemon (relays and stores only ciphertext).",
    "securechat",
)
