"""Presenced's module host: runs presence router modules on this thread's event loop.

Private to Presenced; modules must not import it. Presenced's Rust side (`bridge`) hands
requests to `Host` on the thread that owns the interpreter, and `Host` calls the modules'
callbacks, drives the coroutines they return, runs their background work and reports results
back through `bridge.finish`.

Coroutines are stepped once as soon as they are called: a router that answers without waiting
for anything (the usual case) costs no asyncio Task. Those that do wait continue in a Task, and
inside it a Twisted Deferred is awaitable as well as an asyncio future, so modules written
for the reference homeserver (which runs on Twisted) work unchanged.
"""

import asyncio
import functools
import importlib
import inspect
import logging
import os
import sys
import threading
import traceback
import types

logger = logging.getLogger("presenced.python")

# Outcomes of starting a call, shared with the Rust side.
DONE = 0
RAISED = 1
PENDING = 2
CANCELLED = 3

# Registration forms, shared with the Rust side.
LEGACY = 0
MODULES = 1

# Twisted modes, shared with the Rust side.
TWISTED_OFF = 0
TWISTED_AUTO = 1
TWISTED_REQUIRED = 2

_CALLBACK_NAMES = ("get_users_for_states", "get_interested_users")

_local = threading.local()

# Twisted's Deferred class once Twisted has been imported, so that Deferreds can be awaited.
_Deferred = None

_CoroutineType = types.CoroutineType


def current_host():
    """The host running on this thread."""
    host = getattr(_local, "host", None)
    if host is None:
        raise RuntimeError("this thread does not run Presenced's module event loop")
    return host


class InterpreterStuck(BaseException):
    """Raised by Presenced inside module code that kept the module event loop busy for longer
    than its time budget. It derives from BaseException so that an `except Exception:` inside
    a busy loop does not swallow it."""


class LoadFailure(Exception):
    """A module could not be loaded.

    `where` is "module" (the dotted path cannot be imported), "config" (its `parse_config`
    refused the configuration; `path` is the key path inside the block) or "construct" (its
    constructor failed).
    """

    def __init__(self, where, message, path=()):
        super().__init__(message)
        self.where = where
        self.message = message
        self.path = [str(p) for p in path]


def short(exc):
    """`ExceptionType: message`."""
    text = str(exc)
    name = type(exc).__name__
    return "%s: %s" % (name, text) if text else name


def describe(exc):
    """(`ExceptionType: message`, the formatted traceback)."""
    full = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__))
    return short(exc), full.rstrip()


def interrupt(thread_id):
    """Raises InterpreterStuck in the thread `thread_id` at its next bytecode."""
    try:
        import ctypes
    except ImportError:
        return -1
    return ctypes.pythonapi.PyThreadState_SetAsyncExc(
        ctypes.c_ulong(thread_id), ctypes.py_object(InterpreterStuck)
    )


# Modules whose frames are the host's machinery, not module code.
_MACHINERY = ("asyncio", "selectors", "threading", "concurrent", "synapse", "twisted")


def _module_code(frame):
    """The name of the innermost module (not machinery) running in `frame`'s stack, or None."""
    while frame is not None:
        name = frame.f_globals.get("__name__") or "?"
        if name.partition(".")[0] not in _MACHINERY:
            return name
        frame = frame.f_back
    return None


def blocker(loop_thread_id):
    """What keeps the module event loop from running, as (in_loop, description).

    in_loop is False when the loop thread runs only the host's machinery (it is waiting for
    the GIL) while other Python threads run module code: one of them holds the GIL, and an
    exception raised in the loop thread would interrupt innocent code.
    """
    frames = sys._current_frames()
    loop_module = _module_code(frames.get(loop_thread_id))
    if loop_module is not None:
        return True, "module %s on the event loop" % loop_module
    names = {t.ident: t.name for t in threading.enumerate()}
    me = threading.get_ident()
    others = []
    for ident, frame in frames.items():
        if ident in (loop_thread_id, me):
            continue
        module = _module_code(frame)
        if module is not None:
            others.append("thread %r of module %s" % (names.get(ident, str(ident)), module))
    if others:
        return False, ", ".join(sorted(others))
    return True, ""


def add_paths(paths, venv):
    """Puts `paths`, then the virtualenv's site-packages, first on sys.path.

    Returns an error message, or None.
    """
    front = [os.fspath(p) for p in paths]
    if venv is not None:
        version = "python%d.%d" % sys.version_info[:2]
        candidates = [os.path.join(venv, lib, version, "site-packages") for lib in ("lib", "lib64")]
        found = [c for c in candidates if os.path.isdir(c)]
        if not found:
            return "no %s site-packages under it (tried %s)" % (version, ", ".join(candidates))
        import site

        before = list(sys.path)
        site.addsitedir(found[0])
        # addsitedir appends; a virtualenv's packages must win over the interpreter's own.
        front.extend(p for p in sys.path if p not in before)
    for p in front:
        while p in sys.path:
            sys.path.remove(p)
    sys.path[0:0] = front
    return None


class _ForwardHandler(logging.Handler):
    """Forwards Python log records to Presenced's logs."""

    def __init__(self, sink):
        super().__init__()
        self._sink = sink

    def emit(self, record):
        try:
            message = self.format(record)
        except Exception:
            message = str(record.msg)
        self._sink(record.levelno, record.name, message)


def install_logging(sink, level):
    """Sends every Python log record at `level` or above to `sink`, once per process."""
    root = logging.getLogger()
    if not any(isinstance(h, _ForwardHandler) for h in root.handlers):
        root.addHandler(_ForwardHandler(sink))
    root.setLevel(level)
    logging.captureWarnings(True)


class _Resume:
    """Continues a coroutine that has already been stepped once, inside an asyncio Task.

    The Task sees what the coroutine yields, except that a Twisted Deferred is handed over as
    an asyncio future that completes when the Deferred fires; the coroutine then reads the
    Deferred's result itself, as it would under Twisted.
    """

    __slots__ = ("_coro", "_first")

    def __init__(self, coro, first):
        self._coro = coro
        self._first = first

    def __await__(self):
        coro = self._coro
        value = self._first
        self._first = None
        while True:
            if _Deferred is not None and isinstance(value, _Deferred):
                value = _deferred_future(value)
            try:
                sent = yield value
            except GeneratorExit:
                coro.close()
                raise
            except BaseException as exc:
                try:
                    value = coro.throw(exc)
                except StopIteration as stop:
                    return stop.value
            else:
                try:
                    value = coro.send(sent)
                except StopIteration as stop:
                    return stop.value


def _deferred_future(deferred):
    loop = asyncio.get_running_loop()
    future = loop.create_future()

    def fired(result):
        if not future.done():
            future.set_result(None)
        # Leave the result in place: the awaiting coroutine reads it from the Deferred.
        return result

    def done(f):
        if f.cancelled() and not deferred.called:
            deferred.cancel()
            # Nobody reads this Deferred any more; do not report its cancellation as unhandled.
            deferred.addErrback(lambda _failure: None)

    deferred.addBoth(fired)
    future.add_done_callback(done)
    # Marks the future as awaited by `yield from`, which is what a Task expects.
    future._asyncio_future_blocking = True
    return future


async def _drive(coro, first):
    return await _Resume(coro, first)


async def _await(awaitable):
    return await awaitable


def _begin(loop, result):
    """Starts running what a module function returned.

    Returns (DONE, value), (RAISED, exception) or (PENDING, task).
    """
    if type(result) is _CoroutineType:
        coro = result
    elif inspect.isawaitable(result):
        coro = _await(result)
    else:
        return DONE, result
    try:
        first = coro.send(None)
    except StopIteration as stop:
        return DONE, stop.value
    except BaseException as exc:
        return RAISED, exc
    return PENDING, loop.create_task(_drive(coro, first))


def _merged(pairs):
    """One pair of callbacks for a module that registered several: answers are merged as the
    server merges routers (union; ALL wins); an invalid answer is returned as it is, so that
    the whole answer is refused."""
    users_callbacks = [p[0] for p in pairs]
    interested_callbacks = [p[1] for p in pairs]

    async def get_users_for_states(states):
        states = list(states)
        merged = {}
        for callback in users_callbacks:
            answer = callback(states)
            if inspect.isawaitable(answer):
                answer = await answer
            if not isinstance(answer, dict):
                return answer
            for user, chosen in answer.items():
                if not isinstance(chosen, (set, frozenset)):
                    return answer
                merged.setdefault(user, set()).update(chosen)
        return merged

    async def get_interested_users(user_id):
        merged = set()
        for callback in interested_callbacks:
            answer = callback(user_id)
            if inspect.isawaitable(answer):
                answer = await answer
            if answer == "ALL":
                return answer
            if not isinstance(answer, (set, frozenset)):
                return answer
            merged.update(answer)
        return merged

    return get_users_for_states, get_interested_users


def _name_of(f):
    return getattr(f, "__qualname__", None) or getattr(f, "__name__", None) or repr(f)


class _LoopingCall:
    """What `looping_background_call` returns: `stop()` ends it."""

    def __init__(self, host, f, interval, desc, args, kwargs):
        self._host = host
        self._f = f
        self._interval = interval
        self._desc = desc
        self._args = args
        self._kwargs = kwargs
        self.running = True
        loop = host.loop
        self._next = loop.time() + interval
        self._handle = loop.call_at(self._next, self._tick)

    def _tick(self):
        if not self.running:
            return
        loop = self._host.loop
        # Schedule the next tick first, so that nothing the call does can end the loop.
        self._next += self._interval
        now = loop.time()
        if self._next <= now:
            self._next = now + self._interval
        self._handle = loop.call_at(self._next, self._tick)
        self._host.background_process(self._desc, self._f, self._args, self._kwargs)

    def stop(self):
        self.running = False
        self._handle.cancel()


class _DelayedCall:
    """What `delayed_background_call` returns: `cancel()`, `active()`, `getTime()`."""

    def __init__(self, host, delay, f, desc, args, kwargs):
        self._host = host
        self._call = (desc, f, args, kwargs)
        self._active = True
        self._when = host.loop.time() + delay
        self._handle = host.loop.call_at(self._when, self._fire)

    def _fire(self):
        self._active = False
        self._host.background_process(*self._call)

    def cancel(self):
        self._active = False
        self._handle.cancel()

    def active(self):
        return self._active

    def getTime(self):
        return self._when


class Host:
    """The module host of one Presenced process: its event loop and its modules."""

    def __init__(self, bridge, timeout, twisted_mode):
        self.bridge = bridge
        self.timeout = timeout
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        self.reactor = None
        self.thread_id = threading.get_ident()
        self._calls = {}
        self._modules = {}
        self._background = set()
        self._waiters = {}
        self._next_waiter = 0
        self._stopping = False
        _local.host = self
        self.twisted_note = self._setup_twisted(twisted_mode)

    def _setup_twisted(self, mode):
        global _Deferred
        if mode == TWISTED_OFF:
            return "Twisted support is off"
        try:
            from twisted.internet import asyncioreactor
            from twisted.internet.defer import Deferred
        except ImportError as exc:
            if mode == TWISTED_REQUIRED:
                raise RuntimeError("Twisted cannot be imported: %s" % short(exc)) from exc
            return "Twisted is not installed"
        _Deferred = Deferred
        if "twisted.internet.reactor" in sys.modules:
            if mode == TWISTED_REQUIRED:
                raise RuntimeError("a Twisted reactor is already installed in this process")
            return "a Twisted reactor is already installed in this process; Deferreds can be awaited but this loop does not drive the reactor"
        asyncioreactor.install(self.loop)
        from twisted.internet import reactor

        self.reactor = reactor
        return None

    # -- the loop --------------------------------------------------------------------------

    def run(self, wake_fd):
        """Runs the event loop until `stop`; restarts it if an error escapes it."""
        loop = self.loop
        loop.add_reader(wake_fd, self.bridge.drain)
        use_reactor = self.reactor is not None
        while not self._stopping:
            try:
                if use_reactor:
                    # The reactor's first run also fires its startup triggers.
                    use_reactor = False
                    self.reactor.run(installSignalHandlers=False)
                else:
                    loop.run_forever()
            except InterpreterStuck:
                logger.warning(
                    "Module code that blocked the Python event loop was interrupted; the loop goes on."
                )
            except BaseException:
                logger.exception("An error escaped the Python event loop; the loop goes on.")
        self._close(wake_fd)

    def stop(self):
        self._stopping = True
        if self.reactor is not None and self.reactor.running:
            try:
                self.reactor.stop()
                # The reactor stops the loop once its shutdown triggers ran; do not wait forever.
                self.loop.call_later(1.0, self.loop.stop)
                return
            except Exception:
                pass
        self.loop.stop()

    def _close(self, wake_fd):
        loop = self.loop
        try:
            loop.remove_reader(wake_fd)
        except Exception:
            pass
        tasks = [t for t in asyncio.all_tasks(loop) if not t.done()]
        for task in tasks:
            task.cancel()
        if tasks:
            try:
                loop.run_until_complete(asyncio.wait(tasks, timeout=1.0))
            except BaseException:
                pass
        self.bridge = None
        try:
            loop.close()
        except Exception:
            pass

    # -- loading ---------------------------------------------------------------------------

    def load(self, form, module_path, config, api_id, server_name):
        """Imports, configures and constructs a module, as the reference's module loader does.

        Returns (get_users_for_states, get_interested_users, module) or None when the module
        registers no presence router.
        """
        from synapse.config import ConfigError
        from synapse.module_api import ModuleApi

        modname, dot, clsname = module_path.rpartition(".")
        if not dot or not modname or not clsname:
            raise LoadFailure(
                "module", "%r is not a dotted Python path (package.module.Class)" % (module_path,)
            )
        try:
            module = importlib.import_module(modname)
        except Exception as exc:
            raise LoadFailure(
                "module", "cannot import Python module %r: %s" % (modname, short(exc))
            ) from exc
        try:
            cls = getattr(module, clsname)
        except AttributeError:
            raise LoadFailure(
                "module", "Python module %r has no attribute %r" % (modname, clsname)
            ) from None

        # An absent or empty block is an empty mapping, as for the reference.
        config = config or {}
        if hasattr(cls, "parse_config"):
            try:
                parsed = cls.parse_config(config)
            except ConfigError as exc:
                raise LoadFailure("config", exc.msg, exc.path or ()) from exc
            except Exception as exc:
                raise LoadFailure(
                    "config",
                    "failed to parse config for module %r: %s" % (module_path, short(exc)),
                ) from exc
        else:
            parsed = config

        api = ModuleApi(self, api_id, server_name, module_path)
        self._modules[api_id] = api
        try:
            if form == LEGACY:
                instance = cls(config=parsed, module_api=api)
                api.register_presence_router_callbacks(
                    **{name: getattr(instance, name, None) for name in _CALLBACK_NAMES}
                )
            else:
                instance = cls(parsed, api)
        except Exception as exc:
            raise LoadFailure(
                "construct", "cannot construct %r: %s" % (module_path, short(exc))
            ) from exc

        pairs = api._presenced_callbacks
        # Later registrations are refused with a warning: routers are fixed at startup.
        api._presenced_callbacks = None
        if not pairs:
            return None
        users, interested = pairs[0] if len(pairs) == 1 else _merged(pairs)
        return users, interested, instance

    def unload(self, api_id):
        """The server dropped the module's router: its looping and delayed calls stop."""
        api = self._modules.pop(api_id, None)
        if api is None:
            return
        for timer in api._presenced_timers:
            if isinstance(timer, _LoopingCall):
                timer.stop()
            else:
                timer.cancel()
        api._presenced_timers = []

    # -- router calls ----------------------------------------------------------------------

    def start(self, call_id, fn, arg):
        """Calls a router callback. Returns (DONE, answer), (RAISED, exception) or
        (PENDING, None); a pending call reports through `bridge.finish` and is cancelled
        after the time budget."""
        try:
            result = fn(arg)
        except BaseException as exc:
            return RAISED, exc
        status, value = _begin(self.loop, result)
        if status != PENDING:
            return status, value
        task = value
        deadline = self.loop.call_later(self.timeout, task.cancel)
        self._calls[call_id] = task
        task.add_done_callback(functools.partial(self._call_done, call_id, deadline))
        return PENDING, None

    def _call_done(self, call_id, deadline, task):
        deadline.cancel()
        self._calls.pop(call_id, None)
        bridge = self.bridge
        if bridge is None:
            return
        if task.cancelled():
            bridge.finish(call_id, CANCELLED, None)
            return
        exc = task.exception()
        if exc is not None:
            bridge.finish(call_id, RAISED, exc)
        else:
            bridge.finish(call_id, DONE, task.result())

    def cancel(self, call_id):
        task = self._calls.get(call_id)
        if task is not None:
            task.cancel()

    # -- the ModuleApi's services ----------------------------------------------------------

    def _succeeded(self, value):
        if self.reactor is not None:
            from twisted.internet import defer

            return defer.succeed(value)
        future = self.loop.create_future()
        future.set_result(value)
        return future

    def _failed(self, exc):
        if self.reactor is not None:
            from twisted.internet import defer

            return defer.fail(exc)
        future = self.loop.create_future()
        future.set_exception(exc)
        return future

    def _wrap(self, future):
        if self.reactor is not None:
            return _Deferred.fromFuture(future)
        return future

    def run_in_background(self, f, *args, **kwargs):
        try:
            result = f(*args, **kwargs)
        except BaseException as exc:
            return self._failed(exc)
        status, value = _begin(self.loop, result)
        if status == DONE:
            return self._succeeded(value)
        if status == RAISED:
            return self._failed(value)
        self._background.add(value)
        value.add_done_callback(self._background.discard)
        return self._wrap(value)

    def background_process(self, desc, f, args, kwargs):
        """Runs `f` in the background; a failure is logged and counted, never raised."""
        desc = desc or _name_of(f)
        try:
            result = f(*args, **kwargs)
        except BaseException as exc:
            self._background_failed(desc, exc)
            return self._succeeded(None)
        status, value = _begin(self.loop, result)
        if status == DONE:
            return self._succeeded(value)
        if status == RAISED:
            self._background_failed(desc, value)
            return self._succeeded(None)
        task = value
        # The loop keeps only weak references to tasks.
        self._background.add(task)
        out = self.loop.create_future()

        def done(t):
            self._background.discard(t)
            result = None
            if not t.cancelled():
                exc = t.exception()
                if exc is not None:
                    self._background_failed(desc, exc)
                else:
                    result = t.result()
            if not out.done():
                out.set_result(result)

        task.add_done_callback(done)
        return self._wrap(out)

    def _background_failed(self, desc, exc):
        logger.error(
            "Background process %r threw an exception",
            desc,
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        if self.bridge is not None:
            self.bridge.background_failed()

    def looping_call(self, f, msec, desc, args, kwargs):
        interval = max(float(msec) / 1000.0, 0.001)
        return _LoopingCall(self, f, interval, desc, args, kwargs)

    def delayed_call(self, msec, f, desc, args, kwargs):
        return _DelayedCall(self, max(float(msec) / 1000.0, 0.0), f, desc, args, kwargs)

    def sleep(self, seconds):
        if self.reactor is not None:
            from twisted.internet import task

            return task.deferLater(self.reactor, seconds, lambda: None)
        return asyncio.sleep(seconds)

    def send_presence(self, api_id, users):
        """Asks the server to send presence to `users`; returns what to await."""
        return self._ask_server(
            lambda waiter: self.bridge.send_presence(api_id, users, waiter)
        )

    def set_presence(self, api_id, states):
        """Asks the server to set `(user_id, presence, status_msg)` states; returns what to
        await."""
        return self._ask_server(
            lambda waiter: self.bridge.set_presence(api_id, states, waiter)
        )

    def _ask_server(self, call):
        """Runs `call(waiter)`, which hands a request to the server, and returns what
        completes when the server answers (`resolve`)."""
        from synapse.api.errors import SynapseError

        waiter = self._next_waiter
        self._next_waiter += 1
        if self.reactor is not None:
            deferred = _Deferred()
            self._waiters[waiter] = (deferred.callback, deferred.errback)
            awaitable = deferred
        else:
            future = self.loop.create_future()
            self._waiters[waiter] = (future.set_result, future.set_exception)
            awaitable = future
        error = call(waiter)
        if error is not None:
            self._waiters.pop(waiter, None)
            raise SynapseError(400, error)
        return awaitable

    def resolve(self, waiter, error):
        """The server finished a `send_presence` or `set_presence` request."""
        entry = self._waiters.pop(waiter, None)
        if entry is None:
            return
        succeed, fail = entry
        try:
            if error is None:
                succeed(None)
            else:
                fail(Exception(error))
        except Exception:
            # The module stopped waiting (its task was cancelled).
            pass
