"""Console tests' fixture: two users on the in-process network (see
tests.clientharness), alice's session driving a console model and controller."""

import datetime

from securechat.console.controller import Controller
from securechat.console.keys import Keymap
from securechat.console.model import ChatModel
from tests.clientharness import Network


class ConsoleRig:
    def __init__(self, test):
        self.net = Network()
        self.alice = self.net.client("alice")
        self.bob = self.net.client("bob")
        self.model = ChatModel(self.alice.session, self.net.clock, tz=datetime.timezone.utc)
        self.quits = []
        self.controller = Controller(self.alice.session, self.model, self.net.clock, Keymap(),
                                     lambda: self.quits.append(True))
        self.redraws = []
        self.model.listen(lambda: self.redraws.append(True))

    def both_in(self, room="#lab"):
        self.controller.submit(f"/join {room}")
        self.net.settle()
        self.bob.session.join(room)
        self.net.settle()

    def bob_says(self, text, room="#lab"):
        self.bob.session.send_text(room, text)
        self.net.settle()

    def lines(self, room="#lab", kinds=("message", "own", "action", "pending", "error")):
        return [(line.kind, line.nick, line.text)
                for line in self.model.pane(room).lines if line.kind in kinds]
