"""Training-time augmentation, one implementation: the seeds' switchable list (plus a shift).

`train.augment` is false, true (the `DEFAULT` preset) or a mapping of switches, each optional:
flip (random horizontal mirror), shift (up to +-s of the height and width, edge pixels mirrored),
brightness (+-b, as a share of full scale), contrast (factor in [lo, hi] around each photo's
per-channel mean), hue (+-h of the colour circle), saturation (factor in [lo, hi]), noise (Gaussian,
std as a share of full scale), downscale (shrunk to a side factor in [d, 1] and enlarged back: the
blur of a region that had few pixels in its photo, like an eye cut from a whole portrait, which
sharp close-ups never show). Applied in that order, on training batches only, every photo drawing
its own amounts anew each epoch. The maths is tf.image's (adjust_brightness/contrast/hue/saturation)
on 0..1 pixels, vectorised per photo.
"""

from __future__ import annotations

# `train.augment: true`: flips, shifts of up to 8% and lighting changes of up to 15% (gender: +1
# point on unseen people).
DEFAULT = {"flip": True, "shift": 0.08, "brightness": 0.15, "contrast": [0.85, 1.15]}


def switches(setting) -> dict:
    """The switches a `train.augment` value turns on ({} for false)."""
    if setting is True:
        return DEFAULT
    return {k: v for k, v in (setting or {}).items() if v not in (None, False, 0)}


def augment(images, switches: dict, seed=None):
    """A float32 (B, H, W, 3) batch in 0..255 -> the same batch augmented per `switches` (see the module)."""
    import tensorflow as tf

    x = images / 255.0
    n = tf.shape(x)[0]
    draws = iter(range(1, 10))  # one op seed per draw: ops sharing a seed would draw the same numbers

    def op_seed():
        return None if seed is None else seed * 10 + next(draws)

    def uniform(low, high, shape=None, dtype=tf.float32):
        return tf.random.uniform(shape or [n, 1, 1, 1], low, high, dtype=dtype, seed=op_seed())

    if switches.get("flip"):
        x = tf.where(uniform(0.0, 1.0) < 0.5, tf.reverse(x, axis=[2]), x)
    if switches.get("shift"):
        h, w = tf.shape(x)[1], tf.shape(x)[2]
        pad_h = tf.cast(tf.cast(h, tf.float32) * float(switches["shift"]), tf.int32)
        pad_w = tf.cast(tf.cast(w, tf.float32) * float(switches["shift"]), tf.int32)
        padded = tf.pad(x, [[0, 0], [pad_h, pad_h], [pad_w, pad_w], [0, 0]], mode="SYMMETRIC")
        dy = uniform(0, 2 * pad_h + 1, [n], tf.int32)
        dx = uniform(0, 2 * pad_w + 1, [n], tf.int32)
        x = tf.map_fn(lambda a: a[0][a[1]:a[1] + h, a[2]:a[2] + w], (padded, dy, dx),
                      fn_output_signature=tf.float32)
    if switches.get("brightness"):
        x = x + uniform(-float(switches["brightness"]), float(switches["brightness"]))
    if switches.get("contrast"):
        low, high = switches["contrast"]
        mean = tf.reduce_mean(x, axis=[1, 2], keepdims=True)
        x = (x - mean) * uniform(float(low), float(high)) + mean
    if switches.get("hue") or switches.get("saturation"):
        hsv = tf.image.rgb_to_hsv(tf.clip_by_value(x, 0.0, 1.0))
        h, s, v = hsv[..., 0:1], hsv[..., 1:2], hsv[..., 2:3]
        if switches.get("hue"):
            h = tf.math.floormod(h + uniform(-float(switches["hue"]), float(switches["hue"])), 1.0)
        if switches.get("saturation"):
            low, high = switches["saturation"]
            s = tf.clip_by_value(s * uniform(float(low), float(high)), 0.0, 1.0)
        x = tf.image.hsv_to_rgb(tf.concat([h, s, v], axis=-1))
    if switches.get("noise"):
        x = x + tf.random.normal(tf.shape(x), stddev=float(switches["noise"]), seed=op_seed())
    if switches.get("downscale"):
        size = tf.shape(x)[1:3]
        factor = uniform(float(switches["downscale"]), 1.0, [n])

        def blur(a):
            small = tf.maximum(tf.cast(tf.round(tf.cast(size, tf.float32) * a[1]), tf.int32), 1)
            return tf.image.resize(tf.image.resize(a[0], small, antialias=True), size)

        x = tf.map_fn(blur, (x, factor), fn_output_signature=tf.float32)
    return tf.clip_by_value(x, 0.0, 1.0) * 255.0
