"""The one door into the model: `hooks`, `capture` and `patch`.

This is the only module that registers PyTorch hooks. `hooks` resolves every site before it
registers anything, registers on ``__enter__``, and removes exactly its own handles on every exit
(errors included). `capture` reads site values during one forward pass; `patch` replaces them.
Everything else in the package (ablation, patching sweeps, attribution at layers, SAE splicing)
composes these three.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
from torch import Tensor, nn

from .errors import HookNotFiredError, InputError, InputTypeError, SeethroughError, SiteError
from .inputs import call_model, validate_inputs, wrap_forward_error
from .sites import Site, as_sites, resolve_site
from .types import Inputs

__all__ = ["hooks", "capture", "patch", "Hooks", "Callback"]

#: ``fn(value, site)`` returns a replacement for ``value`` (same shape), or ``None`` to leave it.
Callback = Callable[[Tensor, Site], "Tensor | None"]


class _Stop(Exception):
    """Raised inside a hook to end a forward pass early; caught by `capture`."""


# -- reading and writing the value of a module's input or output ---------------------------


def _output_value(output: Any, site: Site) -> Tensor:
    """The tensor a site's output point means: ``output[site.element]``, or by default the output
    itself, its first element or its first value."""
    if site.element is not None:
        return _element(output, site.element, site, "output")
    if isinstance(output, Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], Tensor):
        return output[0]
    if isinstance(output, Mapping):
        key = next(iter(output), None)
        if key is not None and isinstance(output[key], Tensor):
            return output[key]
    raise SiteError(
        f"{site!r}: the module returned {type(output).__name__}, which holds no tensor in first place; "
        "sites read a Tensor output, the first element of a tuple/list, or the first value of a dict "
        "(name another one with Site(..., element=i or 'key')). Or pick a submodule that returns a tensor.",
        site=site,
    )


def _element(container: Any, element: int | str, site: Site, what: str) -> Tensor:
    """``container[element]`` as a tensor, or a `SiteError` that lists what the container holds."""
    if isinstance(element, int) and isinstance(container, (tuple, list)):
        found = container[element] if -len(container) <= element < len(container) else _MISSING
        holds = f"{len(container)} elements"
    elif isinstance(element, str) and isinstance(container, Mapping):
        found = container[element] if element in container else _MISSING
        holds = f"keys {list(container.keys())}"
    else:
        raise SiteError(f"{site!r}: element={element!r} needs a {'tuple/list' if isinstance(element, int) else 'dict'} "
                        f"{what}, but the module's {what} is {type(container).__name__}.", site=site)
    if found is _MISSING:
        raise SiteError(f"{site!r}: the module's {what} has no element {element!r}; it holds {holds}.", site=site)
    if not isinstance(found, Tensor):
        hint = (" (HuggingFace attention modules return their probabilities only under eager attention: load "
                "the model with attn_implementation='eager', e.g. seethrough.hf.load_minilm(eager_attention=True))"
                if found is None else "")
        raise SiteError(f"{site!r}: element {element!r} of the module's {what} is {type(found).__name__}, "
                        f"not a Tensor{hint}.", site=site)
    return found


_MISSING = object()


def _rebuild_output(output: Any, new: Tensor, site: Site) -> Any:
    """``output`` with the value `_output_value` read replaced by ``new``."""
    if isinstance(output, Tensor):
        return new
    element = site.element
    if isinstance(output, (tuple, list)):
        index = 0 if element is None else int(element) % len(output)
        if hasattr(output, "_replace"):  # namedtuple
            return output._replace(**{output._fields[index]: new})
        items = list(output)
        items[index] = new
        return type(output)(items)
    out = output.copy()  # HuggingFace ModelOutput and dict both support copy + setitem
    out[next(iter(output)) if element is None else element] = new
    return out


def _input_value(args: tuple[Any, ...], kwargs: dict[str, Any], site: Site) -> tuple[Tensor, int | str]:
    """The tensor a site's input point means, and where it is: a positional index or a keyword name."""
    if isinstance(site.element, int):
        value = _element(args, site.element, site, "positional arguments")
        return value, site.element % len(args)
    if isinstance(site.element, str):
        return _element(kwargs, site.element, site, "keyword arguments"), site.element
    if args:
        if not isinstance(args[0], Tensor):
            raise SiteError(f"{site!r}: the module's first positional argument is {type(args[0]).__name__}, "
                            "not a Tensor; name another argument with Site(..., element=i or 'keyword').", site=site)
        return args[0], 0
    for key, value in kwargs.items():
        if isinstance(value, Tensor):
            return value, key
    raise SiteError(f"{site!r}: the module was called without any tensor argument, so it has no input value.",
                    site=site)


def _check_replacement(site: Site, value: Tensor, new: Any) -> Tensor:
    if not isinstance(new, Tensor):
        raise SiteError(f"{site!r}: the callback returned {type(new).__name__}; return a Tensor or None.")
    if new.shape != value.shape:
        raise SiteError(
            f"{site!r}: replacement has shape {tuple(new.shape)} but the value has shape {tuple(value.shape)}; "
            "return a tensor of the same shape."
        )
    if new.dtype != value.dtype or new.device != value.device:
        raise SiteError(
            f"{site!r}: replacement is {new.dtype} on {new.device} but the value is {value.dtype} on "
            f"{value.device}; convert it with .to(value)."
        )
    return new


@dataclass
class _SiteState:
    site: Site
    module: nn.Module
    fn: Callback
    calls: int = 0
    fired: int = 0


class Hooks:
    """Context manager that runs callbacks at sites; made by `hooks`."""

    def __init__(self, model: nn.Module, callbacks: Mapping[Site | str, Callback], *, require_fired: bool = True,
                 refuse_repeats: bool = False) -> None:
        if not isinstance(model, nn.Module):
            raise InputTypeError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
        if not isinstance(callbacks, Mapping) or not callbacks:
            raise InputTypeError("hooks needs a non-empty dict {site: fn(value, site) -> Tensor | None}.")
        self._model = model
        states: dict[Site, _SiteState] = {}
        for key, fn in callbacks.items():
            site, module = resolve_site(model, key)
            if not callable(fn):
                raise InputTypeError(f"the callback for {site!r} is {type(fn).__name__}, not callable.")
            if site in states:
                raise SiteError(f"{site!r} is given twice; merge the two callbacks into one.")
            states[site] = _SiteState(site, module, fn)
        self._states = states
        self._require_fired = require_fired
        self._refuse_repeats = refuse_repeats
        self._stack: contextlib.ExitStack | None = None
        self.callback_error: BaseException | None = None

    @property
    def calls(self) -> dict[Site, int]:
        """How many times each site's module ran since the block was entered."""
        return {s: st.calls for s, st in self._states.items()}

    def call(self, inputs: Inputs) -> Any:
        """Call the hooked model on ``inputs`` inside the open block and return its output.

        A failure of the model itself becomes a `ForwardError` naming the model and the inputs;
        an error raised by one of the callbacks propagates unchanged.
        """
        try:
            return call_model(self._model, inputs)
        except _Stop:
            raise
        except Exception as err:
            if err is self.callback_error or isinstance(err, SeethroughError):
                raise
            raise wrap_forward_error(err, self._model, inputs) from err

    def _run(self, st: _SiteState, value: Tensor) -> Tensor | None:
        k = st.calls
        st.calls += 1
        site = st.site
        if site.call is not None:
            if k != site.call:
                return None
        elif self._refuse_repeats and k > 0:
            raise SiteError(
                f"{site!r}: module {site.path!r} ran more than once in one forward pass; "
                f"pick one call with Site({site.path!r}, call=k)."
            )
        st.fired += 1
        selected = site.select(value)
        try:
            result = st.fn(selected, site)
        except BaseException as err:  # a user callback's error propagates unchanged
            self.callback_error = err
            raise
        if result is None:
            return None
        return site.replace(value, _check_replacement(site, selected, result))

    def _register(self, st: _SiteState, stack: contextlib.ExitStack) -> None:
        if st.site.point == "output":

            def forward_hook(module: nn.Module, args: Any, output: Any) -> Any:
                new = self._run(st, _output_value(output, st.site))
                return None if new is None else _rebuild_output(output, new, st.site)

            handle = st.module.register_forward_hook(forward_hook)
        else:

            def pre_hook(module: nn.Module, args: Any, kwargs: dict[str, Any]) -> Any:
                value, key = _input_value(args, kwargs, st.site)
                new = self._run(st, value)
                if new is None:
                    return None
                if isinstance(key, int):
                    return (*args[:key], new, *args[key + 1:]), kwargs
                return args, {**kwargs, key: new}

            handle = st.module.register_forward_pre_hook(pre_hook, with_kwargs=True)
        stack.callback(handle.remove)

    def __enter__(self) -> Hooks:
        if self._stack is not None:
            raise SeethroughError("this hooks() context is already active; create a new one to nest.")
        stack = contextlib.ExitStack()
        try:
            for st in self._states.values():
                st.calls = st.fired = 0
                self._register(st, stack)
        except BaseException:
            stack.close()  # roll back a partial registration
            raise
        self._stack = stack
        self.callback_error = None
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()
        if exc_type is None and self._require_fired:
            missing = [st for st in self._states.values() if st.fired == 0]
            if missing:
                raise HookNotFiredError("hooks never ran for: " + "; ".join(
                    f"{st.site!r} (module ran {st.calls} time(s)"
                    + (f", call={st.site.call} needs {st.site.call + 1})" if st.site.call is not None else ")")
                    for st in missing
                ) + ". Check that the forward pass uses these modules.")


def hooks(model: nn.Module, callbacks: Mapping[Site | str, Callback], *, require_fired: bool = True,
          refuse_repeats: bool = False) -> Hooks:
    """Run ``fn(value, site)`` at each site while the ``with`` block is open.

    All sites are resolved here, before anything is registered; hooks are registered on entering
    the block and exactly those handles are removed on leaving it, also after an error. A
    callback returns a replacement tensor of the same shape (the site's slice, if it selects
    units/positions) or ``None`` to leave the value unchanged.

    Args:
        model: the model whose modules are hooked.
        callbacks: ``{site: fn}``; a key may be a `Site` or a module path string.
        require_fired: raise `HookNotFiredError` on a clean exit if some site never ran.
        refuse_repeats: raise `SiteError` if a module of a site with ``call=None`` runs twice.

    Raises:
        SiteNotFoundError: a path names no module (the message lists close matches).

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> with hooks(model, {"0": lambda value, site: value * 0}):
        ...     model(torch.ones(1, 2)).abs().sum().item()
        0.0
    """
    return Hooks(model, callbacks, require_fired=require_fired, refuse_repeats=refuse_repeats)


def _site_map(keys: Iterable[Site | str]) -> dict[Site | str, Site]:
    """Each key as a `Site` (paths are resolved later, once, by `Hooks`)."""
    return {key: Site(key) if isinstance(key, str) else key for key in keys}


def capture(model: nn.Module, inputs: Inputs, sites: Site | str | Iterable[Site | str], *, stop: bool = False,
            clone: bool | None = None) -> dict[Any, Tensor]:
    """Run one forward pass and return the value at each site.

    Values keep the caller's autograd mode (they carry ``grad_fn`` when grad is enabled). By
    default they are the model's own tensors, and `capture` checks after the pass that none was
    changed in place later in the forward (as ``nn.ReLU(inplace=True)`` does); under
    ``torch.inference_mode``, where PyTorch keeps no version counters to check, they are copied.

    Args:
        model: any ``nn.Module``.
        inputs: a tensor, a tuple of positional arguments or a dict of keyword arguments.
        sites: a `Site`, a module path, or a list of them.
        stop: end the forward pass as soon as every site has been read (a later repeat call of a
            module is then not detected).
        clone: ``True`` copies every value; ``False`` never does; ``None`` decides as above.

    Returns:
        ``{site: tensor}``, keyed by the sites exactly as given.

    Raises:
        SiteNotFoundError: unknown path (before any forward pass).
        SiteError: a site's module ran more than once (choose ``Site(path, call=k)``), or a value
            was modified in place after it was captured (pass ``clone=True``).
        ForwardError: the model itself failed; the original error is chained.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU())
        >>> capture(model, torch.zeros(4, 2), ["0"])["0"].shape
        torch.Size([4, 3])
    """
    site_of = _site_map(as_sites(sites))
    ctx_sites = list(dict.fromkeys(site_of.values()))
    if clone is None:
        clone = torch.is_inference_mode_enabled()
    values: dict[Site, tuple[Tensor, int]] = {}

    def store(value: Tensor, site: Site) -> None:
        if clone or value.is_inference():  # inference tensors keep no version counter to check
            values[site] = (value.clone(), -1)
        else:
            values[site] = (value, value._version)
        if stop and len(values) == len(ctx_sites):
            raise _Stop

    ctx = hooks(model, dict.fromkeys(ctx_sites, store), refuse_repeats=True)  # resolves every site
    validate_inputs(model, inputs)
    try:
        with ctx:
            ctx.call(inputs)
    except _Stop:
        pass
    changed = [s for s, (t, version) in values.items() if version >= 0 and t._version != version]
    if changed:
        raise SiteError(
            f"values at {changed} were modified in place later in the forward pass (e.g. by "
            "nn.ReLU(inplace=True)), so what was captured is not what the module produced; "
            "pass clone=True to capture copies."
        )
    return {key: values[site][0] for key, site in site_of.items()}


def patch(model: nn.Module, inputs: Inputs, replacements: Mapping[Site | str, Tensor | Callback]) -> Any:
    """Run one forward pass with site values replaced; return the model's output.

    A tensor replaces the site's value (or selected slice) and may broadcast to it, e.g. a
    ``(d,)`` mean over a ``(batch, d)`` value. A callable is called as ``fn(value, site)`` and
    returns the replacement or ``None``. Each site's module must run exactly once unless the
    site names a ``call``.

    Raises:
        SiteNotFoundError: unknown path (before any forward pass).
        InputError: a replacement tensor holds NaN/inf.
        SiteError: a replacement does not broadcast to the value's shape, or has another dtype.
        ForwardError: the model itself failed; the original error is chained.

    Example:
        >>> model = nn.Sequential(nn.Linear(2, 3), nn.ReLU(), nn.Linear(3, 1))
        >>> x = torch.ones(5, 2)
        >>> torch.equal(patch(model, x, {"0": capture(model, x, ["0"])["0"]}), model(x))
        True
    """
    if not isinstance(replacements, Mapping) or not replacements:
        raise InputTypeError("patch needs a non-empty dict {site: tensor | fn(value, site)}.")
    validate_inputs(model, inputs)
    callbacks: dict[Site | str, Callback] = {}
    for key, rep in replacements.items():
        if isinstance(rep, Tensor):
            site = resolve_site(model, key)[0]
            if rep.is_floating_point() and not bool(torch.isfinite(rep).all()):
                raise InputError(f"the replacement for {site!r} contains NaN/inf; patch with finite values.")
            callbacks[key] = _constant(rep)
        elif callable(rep):
            callbacks[key] = rep
        else:
            raise InputTypeError(f"the replacement for {key!r} is {type(rep).__name__}; give a Tensor or a callable.")
    ctx = hooks(model, callbacks, refuse_repeats=True)
    with ctx:
        return ctx.call(inputs)


def _constant(rep: Tensor) -> Callback:
    def replace(value: Tensor, site: Site) -> Tensor:
        try:
            new = rep.to(device=value.device).broadcast_to(value.shape)
        except RuntimeError:
            raise SiteError(
                f"{site!r}: replacement of shape {tuple(rep.shape)} does not broadcast to the value's "
                f"shape {tuple(value.shape)}."
            ) from None
        if new.dtype != value.dtype:
            raise SiteError(f"{site!r}: replacement is {new.dtype} but the value is {value.dtype}; convert it.")
        return new

    return replace
