"""Explore a trained CapsNet live in a notebook: pose sliders and routing rounds.

Two explorers built on ipywidgets, each a small object that a test (or a
curious student) can also drive from Python:

- ``pose_explorer(model, images, labels)``: one slider per pose dimension of a
  class capsule (16 with the paper's CapsNet); moving one re-runs only the
  decoder (a small MLP), so the reconstruction follows the slider at once.
  ``explorer.sliders[3].value = 0.2`` changes ``explorer.reconstruction``;
  ``explorer.reset()`` restores the image's own pose.
- ``routing_explorer(model, images, labels)``: the couplings of the strongest
  primary capsules (the longest) to the class capsules, round by round.

Where widgets do not render (nbval, nbconvert, static HTML, GitHub) an
explorer shown in a notebook also carries a PNG of the same view, drawn with
matplotlib; ``explorer.figure()`` returns that figure, and ``static=True``
shows only the picture.
"""
import base64
import io
import time

import matplotlib.patches
import matplotlib.pyplot as plt
import numpy as np
from keras import ops

from capslib.data import CLASS_NAMES
from capslib.routing import routing_rounds

FONT = 11  # every label at least 10 pt: readable on a projector
READOUT_PX = 64       # a pose slider's readout box: "-0.999" is 48 px at the widgets' font
SLIDER_MIN_PX = 270   # a pose slider's narrowest: 48 px name, a 100+ px track, the readout


def _widgets():
    try:
        import ipywidgets
    except ImportError as e:  # the notebooks extra installs it
        raise ImportError("the live explorers need ipywidgets: pip install -e '.[notebooks]' "
                          "(or pass static=True for the picture only)") from e
    return ipywidgets


def _as_images(images):
    images = np.asarray(images, dtype="float32")
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4:
        raise ValueError(f"images must have shape (n, 28, 28[, 1]), got {images.shape}")
    if not len(images):
        raise ValueError("images is empty: pass at least one image")
    return images


def _names(model, class_names):
    if class_names is None or len(class_names) != model.n_classes:
        return [str(k) for k in range(model.n_classes)]
    return list(class_names)


def _png_of_image(image, scale=8):
    """A 2-D array in [0, 1] as PNG bytes, ink dark on white (matplotlib's 'binary'),
    each pixel drawn as a ``scale`` x ``scale`` block."""
    from PIL import Image  # matplotlib depends on Pillow
    pixels = np.clip(np.asarray(image, dtype="float32"), 0, 1)
    pixels = np.round(255 * (1 - pixels)).astype("uint8")
    pixels = np.repeat(np.repeat(pixels, scale, axis=0), scale, axis=1)
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG", compress_level=1)
    return buffer.getvalue()


def _png_of_figure(fig, dpi=80):
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    plt.close(fig)  # not shown a second time by the inline backend
    return buffer.getvalue()


class _Explorer:
    """What both explorers share: the widget, the picture, the timings."""

    def __init__(self, static):
        self.static = bool(static)
        self.widget = None
        self.last_update_ms = None  # the last update's time (model + image), milliseconds
        self.update_times_ms = []

    def _timed(self, start):
        self.last_update_ms = 1000 * (time.perf_counter() - start)
        self.update_times_ms.append(self.last_update_ms)

    def figure(self):  # pragma: no cover - defined by each explorer
        raise NotImplementedError

    def png(self, dpi=80):
        """The current view as PNG bytes (the picture kept where widgets do not render)."""
        return _png_of_figure(self.figure(), dpi=dpi)

    def _repr_mimebundle_(self, include=None, exclude=None):
        # A front end with the widget manager (JupyterLab, Notebook 7, VS Code)
        # shows the widget; nbconvert without widget state, nbviewer and GitHub
        # fall back to the PNG. text/plain stays free of anything the weights
        # decide, so nbval can compare it.
        bundle = {"text/plain": self._summary(),
                  "image/png": base64.b64encode(self.png()).decode("ascii")}
        if not self.static and self.widget is not None:
            bundle.update(self.widget._repr_mimebundle_())
            bundle["text/plain"] = self._summary()
        return bundle

    def _ipython_display_(self):  # pragma: no cover - only inside IPython
        from IPython.display import display
        display(self._repr_mimebundle_(), raw=True)

    def __repr__(self):
        return self._summary()


class PoseExplorer(_Explorer):
    """See :func:`pose_explorer`. Attributes a test can drive:

    ``sliders`` (one FloatSlider per pose dimension), ``image_slider``,
    ``class_picker``, ``reset_button``; and read: ``reconstruction`` (H, W),
    ``original`` (H, W), ``pose`` (dims,), ``ranges`` (dims, 2),
    ``last_update_ms``.
    """

    def __init__(self, model, images, labels=None, index=0, class_id=None,
                 percentiles=(1, 99), class_names=CLASS_NAMES, scale=8, batch_size=100,
                 static=False):
        super().__init__(static)
        if not getattr(model, "has_decoder", False):
            raise ValueError("pose_explorer needs a CapsNet with a decoder "
                             "(this one was built with decoder=False)")
        self.model = model
        self.images = _as_images(images)
        self.labels = None if labels is None else np.asarray(labels).astype(int)
        self.class_names = _names(model, class_names)
        self.scale = int(scale)
        poses, lengths = [], []
        for start in range(0, len(self.images), batch_size):  # once, for every image
            out = model(self.images[start:start + batch_size], training=False)
            poses.append(ops.convert_to_numpy(out["poses"]))
            lengths.append(ops.convert_to_numpy(out["lengths"]))
        self.poses = np.concatenate(poses).astype("float32")        # (n, classes, dims)
        self.lengths = np.concatenate(lengths).astype("float32")    # (n, classes)
        self.predicted = self.lengths.argmax(axis=1)
        # Each dimension's range: its spread over the images' predicted-class
        # capsules (the pose the decoder redraws from).
        chosen = self.poses[np.arange(len(self.poses)), self.predicted]  # (n, dims)
        lo, hi = np.percentile(chosen, percentiles, axis=0)
        narrow = hi - lo < 1e-3  # one image, or a dimension that never moves
        mid = (lo + hi) / 2
        lo, hi = np.where(narrow, mid - 0.25, lo), np.where(narrow, mid + 0.25, hi)
        self.percentile_ranges = np.stack([lo, hi], axis=1)
        self.ranges = self.percentile_ranges.copy()
        self.index = self.class_id = None
        self.pose = self.reconstruction = self.original = None
        self._hold = False
        self._build_widgets()
        self.select(index, class_id)

    # -- the model ----------------------------------------------------------
    def _decode(self):
        start = time.perf_counter()
        poses = np.zeros((1, *self.poses.shape[1:]), "float32")
        poses[0, self.class_id] = self.pose
        self.reconstruction = self.model.decode(poses, [self.class_id])[0, ..., 0]
        if self.widget is not None:
            self.reconstruction_view.value = _png_of_image(self.reconstruction, self.scale)
            self._timed(start)
            self._show_info()
        else:
            self._timed(start)

    @property
    def tweaked_dims(self):
        """The dimensions whose value differs from the image's own pose."""
        own = self.poses[self.index, self.class_id]
        return [int(d) for d in np.flatnonzero(~np.isclose(self.pose, own, atol=1e-7))]

    # -- actions ------------------------------------------------------------
    def select(self, index, class_id=None):
        """Show image ``index``, decoded from the capsule of ``class_id`` (its
        predicted class by default), with its own pose."""
        index = int(index)
        if not 0 <= index < len(self.images):
            raise ValueError(f"index must be in 0..{len(self.images) - 1}, got {index}")
        self.index = index
        self.class_id = int(self.predicted[index] if class_id is None else class_id)
        if not 0 <= self.class_id < self.model.n_classes:
            raise ValueError(f"class_id must be in 0..{self.model.n_classes - 1}")
        self.original = self.images[index, ..., 0]
        own = self.poses[index, self.class_id]
        # Widen a range that would not hold this image's own value.
        self.ranges[:, 0] = np.minimum(self.percentile_ranges[:, 0], own)
        self.ranges[:, 1] = np.maximum(self.percentile_ranges[:, 1], own)
        if self.widget is not None:
            self._hold = True
            try:
                self.image_slider.value = index
                self.class_picker.value = self.class_id
                self.original_view.value = _png_of_image(self.original, self.scale)
                for d, slider in enumerate(self.sliders):
                    lo, hi = (float(v) for v in self.ranges[d])
                    # Set the bounds in an order that never puts min above max.
                    if lo > slider.max:
                        slider.max, slider.min = hi, lo
                    else:
                        slider.min, slider.max = lo, hi
                    slider.step = (hi - lo) / 200
            finally:
                self._hold = False
        self.reset()
        return self

    def reset(self):
        """Back to the image's own pose (every slider on its value)."""
        self.pose = self.poses[self.index, self.class_id].copy()
        if self.widget is not None:
            self._hold = True
            try:
                for d, slider in enumerate(self.sliders):
                    slider.value = float(self.pose[d])
            finally:
                self._hold = False
        self._decode()
        return self

    def set_dim(self, dim, value):
        """Set one pose number (what moving slider ``dim`` does) and decode."""
        if self.widget is not None:
            self.sliders[dim].value = float(value)  # the observer decodes
        else:
            self.pose[dim] = value
            self._decode()
        return self

    # -- widgets --------------------------------------------------------------
    def _build_widgets(self):
        if self.static:
            return
        w = _widgets()
        n_dims = self.poses.shape[-1]
        px = f"{self.images.shape[2] * self.scale}px"
        self.image_slider = w.IntSlider(0, 0, len(self.images) - 1, description="image",
                                        continuous_update=False)
        self.class_picker = w.Dropdown(options=[(name, k) for k, name in
                                                enumerate(self.class_names)],
                                       description="capsule")
        self.reset_button = w.Button(description="reset", icon="undo",
                                     tooltip="back to the image's own pose")
        self.original_view = w.Image(format="png", width=px)
        self.reconstruction_view = w.Image(format="png", width=px)
        self.reconstruction_view.add_class("capslib-reconstruction")
        self.info = w.HTML()
        # Each readout ("-0.125": a pose number is at most 1 in size) in a box of a fixed
        # width that no neighbour can squeeze.
        css = w.HTML(f"<style>.capslib-pose-slider .widget-readout {{width: {READOUT_PX}px; "
                     f"min-width: {READOUT_PX}px; flex: 0 0 auto}}</style>",
                     layout=w.Layout(display="none"))
        self.sliders = []
        for d in range(n_dims):
            # Each slider fills its cell of the grid below (never wider than the cell).
            slider = w.FloatSlider(description=f"dim {d}", readout_format=".3f",
                                   continuous_update=True, style={"description_width": "48px"},
                                   layout=w.Layout(width="auto", min_width="0"))
            slider.add_class("capslib-pose-slider")
            slider.observe(self._on_slider, names="value")
            self.sliders.append(slider)
        self.image_slider.observe(lambda change: self._hold or self.select(change["new"]),
                                  names="value")
        self.class_picker.observe(
            lambda change: self._hold or self.select(self.index, change["new"]), names="value")
        self.reset_button.on_click(lambda _: self.reset())
        caption = {"font_size": "13px"}
        keep = w.Layout(flex="0 0 auto")  # drawn whole, never squeezed by its neighbours
        pictures = w.HBox([
            w.VBox([w.Label("original", style=caption), self.original_view], layout=keep),
            w.VBox([w.Label("decoded from the pose", style=caption), self.reconstruction_view],
                   layout=keep),
        ], layout=keep)
        # The sliders in a grid of two columns (dim 0 | dim 1, dim 2 | dim 3, ...) that
        # sits beside the pictures where the output area has room and wraps below them
        # where it has not; one column where even two do not fit. (Two columns of 330 px
        # sliders beside the pictures needed ~1,130 px, more than the output area has in
        # JupyterLab below ~1,900 px windows: the columns shrank, the sliders overflowed
        # them, so each readout was hidden under the next column or past the area's edge,
        # shown only by scrolling that column sideways.)
        column = f"{SLIDER_MIN_PX}px"
        self.slider_grid = w.GridBox(self.sliders, layout=w.Layout(
            grid_template_columns=(f"repeat(auto-fill, minmax(max({column}, "
                                   "calc(50% - 4px)), 1fr))"),
            grid_gap="0 8px", flex=f"1 1 {2 * SLIDER_MIN_PX + 8}px", min_width=column,
            max_width="900px", overflow="visible"))
        self.slider_grid.add_class("capslib-pose-sliders")
        wrap = w.Layout(flex_flow="row wrap", align_items="flex-start")
        self.widget = w.VBox([
            w.HBox([self.image_slider, self.class_picker, self.reset_button], layout=wrap),
            w.HBox([pictures, self.slider_grid], layout=wrap),
            self.info, css,
        ])
        self.widget.add_class("capslib-pose-explorer")

    def _on_slider(self, change):
        if self._hold:
            return
        dim = self.sliders.index(change["owner"])
        own = float(self.poses[self.index, self.class_id, dim])
        value = float(change["new"])
        # A browser snaps each value to the slider's grid of steps and sends it
        # back: within half a step of the image's own value counts as that value.
        if abs(value - own) <= change["owner"].step / 2 * 1.001:
            value = own
        if value == self.pose[dim]:
            return  # the snap of a value already decoded
        self.pose[dim] = value
        self._decode()

    def _show_info(self):
        k = self.index
        truth = ("" if self.labels is None
                 else f"true class <b>{self.class_names[self.labels[k]]}</b>, ")
        length = float(np.linalg.norm(self.pose))
        self.info.value = (
            f"<span style='font-size:13px'>image {k}: {truth}predicted "
            f"<b>{self.class_names[self.predicted[k]]}</b>; decoding the "
            f"<b>{self.class_names[self.class_id]}</b> capsule (length {length:.2f}); "
            f"tweaked: {self.tweaked_dims or 'none'}; "
            f"update {self.last_update_ms:.1f} ms</span>")

    # -- the picture ------------------------------------------------------------
    def figure(self):
        """The current view as a matplotlib Figure (originals, reconstruction,
        the pose numbers on their slider ranges)."""
        return plot_pose_view(self.original, self.reconstruction, self.pose,
                              self.poses[self.index, self.class_id], self.ranges,
                              class_name=self.class_names[self.class_id],
                              true_name=(None if self.labels is None
                                         else self.class_names[self.labels[self.index]]),
                              index=self.index)

    def _summary(self):
        return (f"PoseExplorer: {len(self.images)} images, {self.poses.shape[-1]} pose "
                "sliders (live in JupyterLab; a picture elsewhere)")


def plot_pose_view(original, reconstruction, pose, own_pose, ranges, class_name,
                   true_name=None, index=None):
    """Original | reconstruction | each pose number on its slider's range."""
    n_dims = len(pose)
    fig = plt.figure(figsize=(12, 4.6))
    grid = fig.add_gridspec(1, 3, width_ratios=[1, 1, 1.25], wspace=0.35)
    ax_in, ax_out, ax_pose = (fig.add_subplot(grid[0, k]) for k in range(3))
    ax_in.imshow(original, cmap="binary", vmin=0, vmax=1)
    ax_in.set_title("original" + (f"\n(true: {true_name})" if true_name else ""),
                    fontsize=FONT)
    im = ax_out.imshow(reconstruction, cmap="binary", vmin=0, vmax=1)
    ax_out.set_title(f"decoded from the\n{class_name} capsule", fontsize=FONT)
    for ax in (ax_in, ax_out):
        ax.set_xticks([]), ax.set_yticks([])
    fig.colorbar(im, ax=[ax_in, ax_out], orientation="horizontal", fraction=0.06, pad=0.04,
                 label="pixel value (0 white, 1 black)").ax.tick_params(labelsize=10)
    ys = np.arange(n_dims)
    ax_pose.hlines(ys, ranges[:, 0], ranges[:, 1], color="0.75", lw=5,
                   label="slider range")
    ax_pose.plot(own_pose, ys, "|", color="black", ms=14, mew=2, label="the image's own")
    ax_pose.plot(pose, ys, "o", color="tab:red", ms=7, label="shown")
    ax_pose.axvline(0, color="0.5", lw=0.8, ls=":")
    ax_pose.set_yticks(ys, [f"dim {d}" for d in ys])
    ax_pose.invert_yaxis()
    ax_pose.set_xlabel("pose value", fontsize=FONT)
    ax_pose.set_ylabel("pose dimension", fontsize=FONT)
    ax_pose.set_title(f"the {class_name} capsule's pose", fontsize=FONT)
    ax_pose.tick_params(labelsize=10)
    ax_pose.legend(fontsize=10, loc="upper center", bbox_to_anchor=(0.5, -0.14), ncol=3,
                   frameon=False)
    where = "" if index is None else f" of image {index}"
    fig.suptitle(f"Pose explorer: the pose{where} and what the decoder draws from it",
                 fontsize=13)
    return fig


def pose_explorer(model, images, labels=None, index=0, class_id=None, percentiles=(1, 99),
                  class_names=CLASS_NAMES, scale=8, static=False):
    """Sliders over the pose of one class capsule, the reconstruction beside the original.

    Args:
        model: a CapsNet with a decoder.
        images: (n, 28, 28[, 1]) floats in [0, 1]; their poses are computed once.
        labels: their true classes (optional; shown in the caption).
        index: the image shown first; ``class_id``: the capsule decoded
            (the image's predicted class by default).
        percentiles: each slider's range, from the spread of that dimension
            over the images' predicted-class capsules (widened to hold the
            shown image's own value).
        scale: screen pixels per image pixel.
        static: show only the picture (no widgets).

    Returns a :class:`PoseExplorer`; show it as a cell's last value.
    """
    return PoseExplorer(model, images, labels, index=index, class_id=class_id,
                        percentiles=percentiles, class_names=class_names, scale=scale,
                        static=static)


# -- routing -------------------------------------------------------------------

def routing_history(model, images, batch_size=50):
    """Every routing round of a CapsNet, for each image (NumPy arrays).

    Returns ``(couplings, primary_lengths, class_lengths)``: the couplings
    used in each round (rounds, n, n_primary, n_classes), the primary
    capsules' lengths (n, n_primary) and the class capsules' lengths after
    each round (rounds, n, n_classes). The last round's are the model's own
    (``CapsNet.routing_trace`` gives the same couplings).
    """
    images = _as_images(images)
    couplings, primary_lengths, class_lengths = [], [], []
    for start in range(0, len(images), batch_size):
        x = ops.convert_to_tensor(images[start:start + batch_size])
        model._check_images(x)
        primary = model.primary_caps(model.conv1(x))
        u_hat = model.digit_caps.predictions(primary)
        rounds = list(routing_rounds(u_hat, model.routing_iterations,
                                     model.digit_caps.stop_inner_gradients))
        couplings.append(np.stack([ops.convert_to_numpy(c) for _, c in rounds]))
        class_lengths.append(np.stack([ops.convert_to_numpy(ops.norm(v, axis=-1))
                                       for v, _ in rounds]))
        primary_lengths.append(ops.convert_to_numpy(ops.norm(primary, axis=-1)))
    return (np.concatenate(couplings, axis=1), np.concatenate(primary_lengths),
            np.concatenate(class_lengths, axis=1))


class RoutingExplorer(_Explorer):
    """See :func:`routing_explorer`. Drive ``round_slider`` (1..r) and
    ``image_slider``; read ``couplings`` (top_k, n_classes) at the shown
    round, ``parts`` (the primary capsules shown), ``class_lengths``."""

    def __init__(self, model, images, labels=None, index=0, top_k=12, class_names=CLASS_NAMES,
                 static=False):
        super().__init__(static)
        self.model = model
        self.images = _as_images(images)
        self.labels = None if labels is None else np.asarray(labels).astype(int)
        self.class_names = _names(model, class_names)
        self.top_k = int(top_k)
        (self.all_couplings, self.primary_lengths,
         self.all_class_lengths) = routing_history(model, self.images)
        self.n_rounds = self.all_couplings.shape[0]
        n_primary = self.primary_lengths.shape[1]
        self.n_maps = int(model.primary_caps.n_maps)
        side = int(round(np.sqrt(n_primary // self.n_maps)))
        self.grid = (side, n_primary // self.n_maps // side)
        cfg = model.get_config()
        # Centre of a primary capsule's receptive field, in input pixels.
        self._stride = int(cfg.get("primary_strides", 2))
        self._offset = (int(cfg.get("primary_kernel", 9)) + int(cfg.get("conv_kernel", 9)) - 2) / 2
        # Its side: conv1's window, widened by the primary capsules' (9 + 9 - 1 = 17 px).
        self.field = int(cfg.get("primary_kernel", 9)) + int(cfg.get("conv_kernel", 9)) - 1
        self.index, self.round = None, self.n_rounds
        self._cache = {}
        self._hold = False
        self._build_widgets()
        self.show(index, self.n_rounds)

    @property
    def parts(self):
        """The shown primary capsules: the top_k longest of the image, longest first."""
        return np.argsort(-self.primary_lengths[self.index], kind="stable")[:self.top_k]

    @property
    def couplings(self):
        """The shown couplings: (top_k, n_classes) at the shown round."""
        return self.all_couplings[self.round - 1, self.index][self.parts]

    @property
    def class_lengths(self):
        """The class capsules' lengths after the shown round (n_classes,)."""
        return self.all_class_lengths[self.round - 1, self.index]

    def part_names(self):
        """'(row, col) map m' for each shown primary capsule."""
        names = []
        for i in self.parts:
            position, m = divmod(int(i), self.n_maps)
            names.append(f"({position // self.grid[1]},{position % self.grid[1]}) map {m}")
        return names

    def part_centres(self):
        """(row, col) of each shown part's receptive-field centre in the input image."""
        position = self.parts // self.n_maps
        rows, cols = position // self.grid[1], position % self.grid[1]
        return np.stack([self._stride * rows + self._offset,
                         self._stride * cols + self._offset], axis=1)

    def show(self, index=None, round=None):
        """Show image ``index`` at routing round ``round`` (1..r)."""
        index = self.index if index is None else int(index)
        round = self.round if round is None else int(round)
        if not 0 <= index < len(self.images):
            raise ValueError(f"index must be in 0..{len(self.images) - 1}, got {index}")
        if not 1 <= round <= self.n_rounds:
            raise ValueError(f"round must be in 1..{self.n_rounds}, got {round}")
        self.index, self.round = index, round
        if self.widget is not None:
            self._hold = True
            try:
                self.image_slider.value, self.round_slider.value = index, round
            finally:
                self._hold = False
            start = time.perf_counter()
            key = (index, round)
            if key not in self._cache:
                self._cache[key] = _png_of_figure(self._plot([round]), dpi=72)
            self.view.value = self._cache[key]
            self._timed(start)
        return self

    def _plot(self, rounds):
        k = self.index
        return plot_routing_view(
            self.images[k, ..., 0], self.all_couplings[:, k][:, self.parts],
            self.all_class_lengths[:, k], rounds, self.part_names(), self.part_centres(),
            self.class_names, true_class=None if self.labels is None else self.labels[k],
            index=k, field=self.field)

    def figure(self):
        """Every round side by side (the picture kept where widgets do not render)."""
        return self._plot(list(range(1, self.n_rounds + 1)))

    def _build_widgets(self):
        if self.static:
            return
        w = _widgets()
        self.image_slider = w.IntSlider(0, 0, len(self.images) - 1, description="image",
                                        continuous_update=False)
        self.round_slider = w.IntSlider(self.n_rounds, 1, self.n_rounds,
                                        description="round", continuous_update=True)
        self.round_slider.add_class("capslib-round-slider")
        self.view = w.Image(format="png")
        self.view.add_class("capslib-routing-view")
        self.image_slider.observe(lambda c: self._hold or self.show(index=c["new"]),
                                  names="value")
        self.round_slider.observe(lambda c: self._hold or self.show(round=c["new"]),
                                  names="value")
        self.widget = w.VBox([w.HBox([self.image_slider, self.round_slider]), self.view])
        self.widget.add_class("capslib-routing-explorer")

    def _summary(self):
        return (f"RoutingExplorer: {len(self.images)} images, {self.n_rounds} routing rounds, "
                f"top {self.top_k} primary capsules (live in JupyterLab; a picture elsewhere)")


def plot_routing_view(image, couplings, class_lengths, rounds, part_names, part_centres,
                      class_names=CLASS_NAMES, true_class=None, index=None, field=None):
    """The input with its strongest parts | their couplings at each of ``rounds`` |
    the class capsules' lengths after those rounds.

    ``couplings``: (all rounds, parts, classes); ``class_lengths``:
    (all rounds, classes); ``rounds``: 1-based rounds to draw; ``field``: the
    side of a part's receptive field in pixels, drawn as a dashed square
    around the first (strongest) part, or None.
    """
    couplings = np.asarray(couplings)
    n_parts, n_classes = couplings.shape[1:]
    uniform = 1.0 / n_classes
    # One colour scale for every round: stepping through rounds shows the change.
    spread = max(float(np.abs(couplings - uniform).max()), 1e-3)
    n_maps = len(rounds)
    fig, axes = plt.subplots(1, n_maps + 2, figsize=(4.6 + 3.3 * n_maps + 3.6, 5.4),
                             width_ratios=[2.6] + [3.0] * n_maps + [2.6], layout="constrained")
    ax_in, heat_axes, ax_len = axes[0], axes[1:-1], axes[-1]
    ax_in.imshow(image, cmap="binary", vmin=0, vmax=1)
    centres, counts = np.unique(np.asarray(part_centres), axis=0, return_counts=True)
    ax_in.scatter(centres[:, 1], centres[:, 0], s=40 + 40 * counts, c="tab:red",
                  edgecolors="white", linewidths=1.5, alpha=0.9)
    field_note = ""
    if field is not None:
        row, col = np.asarray(part_centres)[0]
        half = (int(field) - 1) / 2  # pixel centres from row - half to row + half
        ax_in.add_patch(matplotlib.patches.Rectangle(
            (col - half - 0.5, row - half - 0.5), field, field, fill=False, edgecolor="tab:red",
            linestyle="--", linewidth=2, label="receptive field"))
        # A 1-pixel margin: a square on the image's border stays visible.
        ax_in.set_xlim(-1.5, image.shape[1] + 0.5), ax_in.set_ylim(image.shape[0] + 0.5, -1.5)
        field_note = f";\ndashed: the {field}x{field} px that part 1 sees"
    ax_in.set_xticks([]), ax_in.set_yticks([])
    truth = "" if true_class is None else f"\n(true: {class_names[true_class]})"
    ax_in.set_title(f"input{'' if index is None else f' {index}'}{truth}", fontsize=FONT)
    ax_in.set_xlabel(f"red: where the top {n_parts} parts look\n(centres of their "
                     f"receptive fields){field_note}", fontsize=10)
    im = None
    for j, (ax, r) in enumerate(zip(heat_axes, rounds)):
        im = ax.imshow(couplings[r - 1], cmap="RdBu_r", vmin=uniform - spread,
                       vmax=uniform + spread, aspect="auto")
        ax.set_xticks(range(n_classes), class_names, rotation=60, ha="right", fontsize=10)
        if j == 0:
            ax.set_yticks(range(n_parts), [f"{k + 1}: {name}" for k, name in
                                           enumerate(part_names)], fontsize=10)
            ax.set_ylabel("primary capsule: (row,col) map", fontsize=FONT)
        else:
            ax.set_yticks([])
        ax.set_xlabel("class capsule", fontsize=FONT)
        ax.set_title(f"couplings, round {r} of {len(couplings)}", fontsize=FONT)
    cbar = fig.colorbar(im, ax=list(heat_axes), fraction=0.05, pad=0.02, aspect=30)
    cbar.set_label(f"coupling c_ij (white: uniform {uniform:.2f})", fontsize=FONT)
    cbar.ax.tick_params(labelsize=10)
    cbar.ax.ticklabel_format(useOffset=False)
    ys = np.arange(n_classes)
    height = 0.8 / len(rounds)
    for j, r in enumerate(rounds):
        offset = (j - (len(rounds) - 1) / 2) * height
        colour = (plt.cm.viridis(0.15 + 0.7 * j / (len(rounds) - 1)) if len(rounds) > 1
                  else "tab:blue")
        ax_len.barh(ys + offset, class_lengths[r - 1], height, label=f"after round {r}",
                    color=colour)
    ax_len.set_yticks(ys, class_names, fontsize=10)
    if true_class is not None:
        ax_len.get_yticklabels()[true_class].set_fontweight("bold")
    ax_len.invert_yaxis()
    ax_len.set_xlim(0, 1)
    ax_len.set_xlabel("length (probability-like)", fontsize=FONT)
    ax_len.set_title("class capsules" if len(rounds) > 1
                     else f"class capsules after round {rounds[0]}", fontsize=FONT)
    ax_len.tick_params(labelsize=10)
    ax_len.grid(axis="x", alpha=0.3)
    if len(rounds) > 1:
        ax_len.legend(fontsize=10, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1,
                      frameon=False)
    fig.suptitle("Routing by agreement: where the strongest parts send their output",
                 fontsize=13)
    return fig


def routing_explorer(model, images, labels=None, index=0, top_k=12, class_names=CLASS_NAMES,
                     static=False):
    """Step through the routing rounds of one image at a time.

    Shows the couplings of the image's ``top_k`` longest primary capsules to
    the class capsules at the chosen round (round 1: uniform), where those
    parts sit on the input, and the class capsules' lengths after that round.
    Every round of every image is computed once, up front (pass a few images).
    Returns a :class:`RoutingExplorer`; show it as a cell's last value (its
    picture, for static outputs, has every round side by side).
    """
    return RoutingExplorer(model, images, labels, index=index, top_k=top_k,
                           class_names=class_names, static=static)
