"""A Runpod SDK 2.0 app with one queue function: which Python serves it, and a greeting."""

import platform

from runpod import App

app = App("sdk2-hello")


@app.queue(name="hello", cpu="cpu3c-2-4")
def hello(name: str):
    return {"hello": name, "python": platform.python_version()}
