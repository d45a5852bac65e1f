"""A Runpod SDK 2.0 app: a queue function with an init hook, a secret and two slots; a
generator; an api class; an ASGI factory with a lifespan; a task (no endpoint)."""

import os

import runpod
from runpod import App, get, init, post

app = App("sdk2-shop")
loaded = {}


@app.queue(
    name="greet",
    cpu="cpu3c-2-4",
    workers=(0, 1),
    max_concurrency=2,
    env={"GREETING": "hello", "TOKEN": runpod.Secret("shop-token")},
)
async def greet(name: str, punct: str = "!"):
    return {
        "text": f"{os.environ['GREETING']} {name}{punct}",
        "warm": loaded.get("warm"),
        "token": os.environ.get("TOKEN"),
        "slots": os.environ.get("RUNPOD_MAX_CONCURRENCY"),
    }


@greet.init
async def warm_up():
    loaded["warm"] = True


@app.queue(name="count", cpu="cpu3c-2-4", workers=(0, 1))
def count(n: int):
    for i in range(n):
        yield {"i": i}


@app.api(name="calc", cpu="cpu3c-2-4", workers=(0, 1))
class Calc:
    @init
    def setup(self):
        self.base = 100

    @post("/add")
    def add(self, body: dict):
        return {"sum": self.base + body["x"]}

    @get("/base")
    async def base_value(self):
        return {"base": self.base}


@app.api(name="site", cpu="cpu3c-2-4", workers=(0, 1))
def site():
    from contextlib import asynccontextmanager

    from fastapi import FastAPI

    @asynccontextmanager
    async def lifespan(api):
        api.state.started = "yes"
        yield

    api = FastAPI(lifespan=lifespan)

    @api.get("/hello")
    def hello():
        return {"hello": "world", "started": api.state.started}

    return api


@app.task(name="crunch", cpu="cpu3c-2-4")
def crunch(xs: list):
    return sum(xs)


@runpod.local_entrypoint
async def main():
    print(await greet.remote.aio("dev"))
