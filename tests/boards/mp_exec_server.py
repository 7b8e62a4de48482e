# Runs under the MicroPython unix port, with the fake board's flash directory as its cwd (the
# board's filesystem root). Reads commands on stdin and executes them in one persistent namespace,
# like the REPL of a board:
#   "R <n>\n" + n bytes: raw-REPL exec; writes output, \x04, error text, \x04, ">" (the raw REPL's
#                        own framing, so the host forwards stdout to the serial line untouched)
#   "F <n>\n" + n bytes: run a file's code as the friendly REPL would (boot.py, main.py): output
#                        and tracebacks as they come, then "\r\nMicroPython...>>> " when it returns
#   "B <n>\n" + n bytes: boot.py after a soft reboot in the raw REPL, then the raw REPL banner
#
# FAKEBOARD_FROZEN=<dir> (a SQAL image): every import also looks in <dir> right after each '.frozen'
# entry of sys.path, so the modules there behave as frozen ones: found through '.frozen' (also when
# sys.path holds nothing else), after the flash root '', and never part of the flash.
import builtins
import io
import os
import sys

sys.path[0] = ""  # the flash root (cwd) first, as on a board; not this script's directory
FROZEN = os.getenv("FAKEBOARD_FROZEN")
if FROZEN:
    _import = builtins.__import__
    _frozen = FROZEN

    def _import_with_frozen(*args):
        saved = list(sys.path)
        sys.path.clear()
        for p in saved:
            sys.path.append(p)
            if p == ".frozen":
                sys.path.append(_frozen)
        try:
            return _import(*args)
        finally:
            sys.path.clear()
            sys.path.extend(saved)

    builtins.__import__ = _import_with_frozen
g = {"__name__": "__main__"}
out = sys.stdout.buffer
stdin = sys.stdin.buffer


def run(code, kind):
    raw = kind == b"R"
    err = None
    try:
        exec(code, g)  # noqa: S102 - executing what the host sends is what a REPL does
    except BaseException as e:  # noqa: BLE001 - a REPL reports every exception, even Ctrl-C
        s = io.StringIO()
        sys.print_exception(e, s)  # type: ignore[attr-defined]  # MicroPython's sys
        err = s.getvalue()
    if raw:
        out.write(b"\x04")
        if err:
            out.write(err.encode())
        out.write(b"\x04>")
    else:
        if err:
            out.write(err.replace("\n", "\r\n").encode())
        if kind == b"B":
            out.write(b"raw REPL; CTRL-B to exit\r\n>")
        else:
            out.write(b"MicroPython (fake board) on unix\r\n>>> ")


while True:
    try:
        head = stdin.readline()
        if not head:
            break
        kind, n = head.split()
        n = int(n)
        code = b""
        while len(code) < n:
            chunk = stdin.read(n - len(code))
            if not chunk:
                raise SystemExit
            code += chunk
        run(code.decode(), kind)
    except KeyboardInterrupt:  # a Ctrl-C that arrived between commands: ignore, like an idle REPL
        pass
