#!/usr/bin/env python3
"""Renders cases.json with Jinja2 configured as Hugging Face transformers'
apply_chat_template configures it (sandboxed environment, trim_blocks,
lstrip_blocks, loop controls, raise_exception, a tojson that keeps
non-ASCII characters) and writes goldens.json: the text of each case, or
the message of the exception it raises.

    python3 make-goldens.py   # needs Jinja2 (3.1.6 made the committed file)
"""
import json
from datetime import datetime

import jinja2
from jinja2.ext import loopcontrols
from jinja2.sandbox import ImmutableSandboxedEnvironment


class TemplateError(Exception):
    pass


def raise_exception(message):
    raise TemplateError(message)


def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
    return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)


def strftime_now(fmt):
    return datetime.now().strftime(fmt)


env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[loopcontrols])
env.filters["tojson"] = tojson
env.globals["raise_exception"] = raise_exception
env.globals["strftime_now"] = strftime_now

out = []
for case in json.load(open("cases.json")):
    t = env.from_string(open(case["template"]).read())
    g = {"name": case["name"]}
    try:
        g["text"] = t.render(messages=case["messages"], tools=None, documents=None,
                             add_generation_prompt=case["add_generation_prompt"], **case["specials"])
    except TemplateError as e:
        g["error"] = str(e)
    out.append(g)
with open("goldens.json", "w") as f:
    json.dump({"jinja2": jinja2.__version__, "goldens": out}, f, indent=1, ensure_ascii=False)
    f.write("\n")
