"""Line charts drawn with PIL alone (ComfyUI ships PIL, not matplotlib): linear or log axes, one
colour per series, a legend. Used by the comparison nodes and the compare CLI."""
import math

from PIL import Image, ImageDraw

PALETTE = [(31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207)]


def _ticks(lo, hi, log, integer=False):
    """Tick values between lo and hi: decades on a log axis (1, 2, 5 times them within less than two decades),
    about five round numbers on a linear one (whole numbers only when `integer`)."""
    if log:
        ticks = [10.0 ** k for k in range(math.floor(lo), math.ceil(hi) + 1) if lo - 1e-9 <= k <= hi + 1e-9]
        if len(ticks) < 2:
            ticks = [m * 10.0 ** k for k in range(math.floor(lo), math.ceil(hi) + 1) for m in (1, 2, 5)
                     if lo - 1e-9 <= k + math.log10(m) <= hi + 1e-9]
        return ticks
    span = hi - lo
    step = 10 ** math.floor(math.log10(span / 5)) if span > 0 else 1.0
    for m in (1, 2, 5, 10):
        if span / (step * m) <= 6:
            step *= m
            break
    if integer:
        step = max(1, round(step))
    first = math.ceil(lo / step) * step
    return [first + k * step for k in range(int((hi - first) / step + 1e-9) + 1)]


def _fmt(v):
    return f"{v:.0e}" if v != 0 and (abs(v) >= 1e4 or abs(v) < 1e-2) else f"{v:g}"


def line_chart(series, title="", xlabel="", ylabel="", xlog=False, ylog=False, size=(640, 420), legend=True,
               integer_x=False):
    """series: list of (label, xs, ys); points with a None, non-finite or (on a log axis) non-positive
    coordinate are skipped. Without `legend` the plot takes the whole width (small pictures stay readable);
    `integer_x` puts ticks on whole numbers only (step counts). Returns an RGB PIL image."""
    def ok(v, log):
        return v is not None and math.isfinite(v) and (v > 0 or not log)

    def tr(v, log):
        return math.log10(v) if log else v

    pts = [[(tr(x, xlog), tr(y, ylog)) for x, y in zip(xs, ys) if ok(x, xlog) and ok(y, ylog)] for _, xs, ys in series]
    allp = [p for ps in pts for p in ps]
    w, h = size
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    left = 64 if w >= 400 else 40
    left, right, top, bottom = left, w - 150 if legend else w - 10, 24, h - 40
    d.text((max(left, 14 + 6 * len(ylabel)), 6), title, fill="black")  # right of the y label
    d.text(((left + right) // 2 - 3 * len(xlabel), h - 16), xlabel, fill="black")
    d.text((4, top - 18), ylabel, fill="black")
    d.rectangle([left, top, right, bottom], outline="black")
    if not allp:
        d.text((left + 10, (top + bottom) // 2), "no finite data", fill="black")
        return img
    x0, x1 = min(p[0] for p in allp), max(p[0] for p in allp)
    y0, y1 = min(p[1] for p in allp), max(p[1] for p in allp)
    pad_x, pad_y = (x1 - x0) * 0.04 or 0.5, (y1 - y0) * 0.06 or 0.5
    x0, x1, y0, y1 = x0 - pad_x, x1 + pad_x, y0 - pad_y, y1 + pad_y
    px = lambda x: left + (x - x0) / (x1 - x0) * (right - left)
    py = lambda y: bottom - (y - y0) / (y1 - y0) * (bottom - top)
    for t in _ticks(x0, x1, xlog, integer_x and not xlog):
        v = math.log10(t) if xlog else t
        d.line([(px(v), bottom), (px(v), top)], fill=(225, 225, 225))
        d.text((px(v) - 12, bottom + 4), _fmt(t), fill="black")
    for t in _ticks(y0, y1, ylog):
        v = math.log10(t) if ylog else t
        d.line([(left, py(v)), (right, py(v))], fill=(225, 225, 225))
        d.text((4, py(v) - 6), _fmt(t), fill="black")
    d.rectangle([left, top, right, bottom], outline="black")
    for k, ((label, _, _), ps) in enumerate(zip(series, pts)):
        color = PALETTE[k % len(PALETTE)]
        xy = [(px(x), py(y)) for x, y in ps]
        if len(xy) > 1:
            d.line(xy, fill=color, width=2)
        for x, y in xy:
            d.ellipse([x - 3, y - 3, x + 3, y + 3], fill=color)
        if not legend:
            continue
        ly = top + 4 + 16 * k
        d.line([(right + 8, ly + 6), (right + 26, ly + 6)], fill=color, width=3)
        d.text((right + 30, ly), str(label)[:18], fill="black")
    return img


def stack(images, pad=6):
    """Images side by side on white."""
    w = sum(im.width for im in images) + pad * (len(images) - 1)
    out = Image.new("RGB", (w, max(im.height for im in images)), "white")
    x = 0
    for im in images:
        out.paste(im, (x, 0))
        x += im.width + pad
    return out
