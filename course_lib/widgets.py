"""Widget plumbing shared by the chapters: a named group of controls.

Notebooks wire controls to pure functions of ``course_lib`` (which return figures or
text); the logic stays testable without a browser::

    controls = descent_controls()          # a Controls
    view = widgets.Output()

    def redraw(change=None):
        with view:
            view.clear_output(wait=True)
            display(descent_figure(**controls.values()))

    controls.observe(redraw)
    redraw()
    display(widgets.VBox([controls.box, view]))
"""

from __future__ import annotations

from collections.abc import Callable

import ipywidgets as widgets


class Controls:
    """Named ipywidgets controls: read them as a dict, react when any of them changes."""

    def __init__(self, **controls: widgets.ValueWidget) -> None:
        if not controls:
            raise ValueError("Controls needs at least one control, got none")
        self.controls = controls
        self.box = widgets.VBox(list(controls.values()))

    def values(self) -> dict:
        """The current value of every control, by name (ready for ``function(**values)``)."""
        return {name: control.value for name, control in self.controls.items()}

    def observe(self, callback: Callable[[dict], None]) -> None:
        """Call ``callback(change)`` whenever the value of any control changes."""
        for control in self.controls.values():
            control.observe(callback, names="value")

    def __getitem__(self, name: str) -> widgets.ValueWidget:
        return self.controls[name]
