"""The chat panel's temperature control: a native range input with a name a screen reader reads.

    box = RangeBox(value=0.7, min=0.0, max=2.0, step=0.1, description="temperature")
    box.observe(lambda change: print(change["new"]), names="value")  # once per value the person sets
    box.value = 1.2        # shown in the page; 3.0 becomes 2.0 (the end of the range), "warm" is refused

Why not ipywidgets' FloatSlider: its handle (a noUiSlider ``<div role="slider">``) has no name of its
own, and ipywidgets 8 has no setting that gives it one.  Here the page draws

    <label>temperature <input type="range" aria-label="temperature" aria-valuetext="0.7"></label> <span>0.7</span>

so a screen reader says "temperature, slider, 0.7", and the keys are the browser's own: arrows, Page
Up / Down, Home, End.  The readout follows while the handle moves; the value reaches the kernel once,
when the person lets go or presses a key (the ``change`` event), so the panel's views recount tokens
once per value (as FloatSlider's ``continuous_update=False`` did; keys pressed faster than the kernel
answers reach it merged by ipywidgets into the last value).  A value from code is clamped into [min, max], as
FloatSlider does; anything that is not a number (text, None, True, nan) is refused with one line.

No import from anywhere: the page may be offline (a classroom).  The browser tests drive it in JupyterLab.
"""

from __future__ import annotations

import math
from numbers import Real
from typing import Any

import anywidget
import traitlets

__all__ = ["RangeBox"]


class _Number(traitlets.TraitType):
    """A float; any other number becomes one.  Text, None, True and nan are refused (traitlets' Float
    takes True as 1.0, FloatSlider takes nan)."""

    default_value = 0.0
    info_text = "a number"

    def validate(self, obj: Any, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, Real) or math.isnan(value):
            raise traitlets.TraitError(f"{obj.description or 'the value'} must be a number from "
                                       f"{obj.min:g} to {obj.max:g} (got {value!r})")
        return float(value)

_ESM = r"""
function render({ model, el }) {
  const label = document.createElement("label");
  const words = document.createElement("span");
  words.className = "nora-range-label";
  const range = document.createElement("input");
  range.type = "range";
  range.className = "nora-range-input";
  // a <span>, not an <output>: that is a status a screen reader would read at every change, besides the
  // slider's own aria-valuetext; hidden from it, as the slider says the same
  const readout = document.createElement("span");
  readout.className = "nora-range-readout";
  readout.setAttribute("aria-hidden", "true");
  label.append(words, range);
  el.append(label, readout);

  // 0.7 -> "0.7" (decimals 1); a value off the steps, set from code (0.35), is shown as it is
  const shown = (value) => {
    const fixed = value.toFixed(model.get("decimals"));
    return Math.abs(Number(fixed) - value) < 1e-9 ? fixed : String(Number(value.toFixed(6)));
  };
  const show = (value) => {
    readout.textContent = shown(value);
    range.setAttribute("aria-valuetext", readout.textContent);
  };
  const attrs = () => {
    range.min = model.get("min"); range.max = model.get("max"); range.step = model.get("step");
    range.disabled = model.get("disabled");
    words.textContent = model.get("description");
    range.setAttribute("aria-label", model.get("description"));
  };
  const draw = () => { range.value = model.get("value"); show(model.get("value")); };  // the kernel's value
  attrs(); draw();
  model.on("change:min change:max change:step change:disabled change:description", () => { attrs(); draw(); });
  model.on("change:value change:decimals", draw);

  range.addEventListener("input", () => show(Number(range.value)));  // the readout follows the handle
  range.addEventListener("change", () => {  // let go, or a key: the one value the kernel hears
    model.set("value", Number(range.value));
    model.save_changes();
  });
  // the range's own keys are not JupyterLab's shortcuts (an arrow would move to another cell)
  const keys = ["ArrowLeft", "ArrowRight", "ArrowUp", "ArrowDown", "PageUp", "PageDown", "Home", "End"];
  range.addEventListener("keydown", (e) => { if (keys.includes(e.key)) e.stopPropagation(); });
}
export default { render };
"""

# The look of ipywidgets' slider row (its theme variables: light or dark); the handle in the theme's blue
_CSS = """
.nora-range { display: flex; align-items: center; gap: 6px; box-sizing: border-box;
  height: var(--jp-widgets-inline-height, 28px);
  font-family: var(--jp-ui-font-family); font-size: var(--jp-widgets-font-size); }
.nora-range label { display: flex; align-items: center; gap: 6px; flex: 1 1 auto; min-width: 0; }
.nora-range .nora-range-label { color: var(--jp-widgets-label-color, var(--jp-ui-font-color1)); white-space: nowrap; }
.nora-range .nora-range-input { flex: 1 1 auto; min-width: 40px; margin: 0;
  accent-color: var(--jp-brand-color1, #1976d2); }
.nora-range .nora-range-input:disabled { opacity: 0.5; }
.nora-range .nora-range-readout { min-width: 2.5em; color: var(--jp-widgets-readout-color, var(--jp-ui-font-color1));
  font-variant-numeric: tabular-nums; }
"""


class RangeBox(anywidget.AnyWidget):
    """A number picked on a range: ``value`` is a float in [min, max], set by the page when the person
    lets go of the handle (or presses a key on it), or by code."""

    _esm = _ESM
    _css = _CSS
    value = _Number(0.0).tag(sync=True)
    min = traitlets.Float(0.0).tag(sync=True)
    max = traitlets.Float(1.0).tag(sync=True)
    step = traitlets.Float(0.1).tag(sync=True)
    decimals = traitlets.Int(1).tag(sync=True)  # the readout: 0.7, not 0.70000001
    description = traitlets.Unicode("").tag(sync=True)  # the words beside it, and its name (aria-label)
    disabled = traitlets.Bool(False).tag(sync=True)

    def __init__(self, value: Any = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)  # min and max first: the value is clamped into them
        self.value = value
        self.add_class("nora-range")

    @traitlets.validate("value")
    def _in_range(self, proposal: dict) -> float:
        """Clamped into the range, as FloatSlider does.  Example (0 to 2): 3.0 -> 2.0, -1 -> 0.0."""
        return min(max(proposal["value"], self.min), self.max)
