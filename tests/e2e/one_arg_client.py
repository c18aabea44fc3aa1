"""A python-socketio client whose handlers each take one argument, as most
python-socketio apps are written: an extra argument (an offset) would make
each handler raise TypeError. It registers as NAME, answers the first call,
answers a candidate with a candidate and a call_update offer with an answer,
and prints one line per handled event ("ok <event>").

Usage: python one_arg_client.py URL NAME
"""

import sys

import socketio

url, name = sys.argv[1], sys.argv[2]
sio = socketio.Client(reconnection=True)
caller = {}


def say(line):
    print(line, flush=True)


@sio.event
def connect():
    sio.emit("register_user", {"userId": name})


@sio.on("user_registered")
def on_registered(data):
    say("registered" if data.get("success") else f"error {data}")


@sio.on("ice_servers")
def on_ice_servers(data):
    say("ok ice_servers")


@sio.on("incoming_call")
def on_incoming_call(data):
    caller["name"] = data["from"]
    sio.emit("answer_call", {"to": data["from"], "from": name,
                             "answer": {"type": "answer", "sdp": "v=0 py"}})
    say("ok incoming_call")


@sio.on("ice_candidate")
def on_ice_candidate(data):
    candidate = {"candidate": "candidate:8 1 udp 2122260223 10.0.0.8 5008 typ host",
                 "sdpMid": "0", "sdpMLineIndex": 0}
    sio.emit("ice_candidate", {"to": data["from"], "from": name, "candidate": candidate})
    say("ok ice_candidate")


@sio.on("call_update")
def on_call_update(data):
    sio.emit("call_update", {"to": data["from"], "from": name,
                             "description": {"type": "answer", "sdp": "v=0 py again"}})
    say("ok call_update")


@sio.on("signaling_error")
def on_signaling_error(data):
    say(f"error {data}")


sio.connect(url, transports=["websocket"])
sio.wait()
