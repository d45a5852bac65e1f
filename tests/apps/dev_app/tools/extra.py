"""Two endpoints in one file whose names are not the file's: runpod-flash's `flash dev` serves
them under /tools/extra (the file, less .py), as the official examples' READMEs call them."""

from runpod_flash import Endpoint


@Endpoint(name="shouter", cpu="cpu3c-1-2", workers=(0, 1))
def shout(text: str) -> str:
    return text.upper()


web = Endpoint(name="extra-web", cpu="cpu3c-1-2", workers=(0, 1))


@web.get("/hello/{who}")
def hello(who: str) -> dict:
    return {"hello": who}
