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

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import ipywidgets as widgets


class Controls:
    """Named ipywidgets controls: read them as a dict, react when any of them changes."""

    def __init__(self, **controls: widgets.ValueWidget) -> None:
        if not controls:
            raise ValueError("Controls needs at least one control, got none")
        self.controls = controls
        self._muted = False
        self.box = widgets.VBox(list(controls.values()))

    def values(self) -> dict:
        """The current value of every control, by name (ready for ``function(**values)``)."""
        return {name: control.value for name, control in self.controls.items()}

    def observe(self, callback: Callable[[dict], None]) -> None:
        """Call ``callback(change)`` whenever the value of any control changes.

        Changes made inside :meth:`muted` do not call it.
        """

        def unless_muted(change: dict) -> None:
            if not self._muted:
                callback(change)

        for control in self.controls.values():
            control.observe(unless_muted, names="value")

    @contextmanager
    def muted(self) -> Iterator[None]:
        """Change several controls at once; observers hear only what happens after the block."""
        self._muted = True
        try:
            yield
        finally:
            self._muted = False

    def __getitem__(self, name: str) -> widgets.ValueWidget:
        return self.controls[name]
