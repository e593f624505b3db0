"""Picture grids of image-like samples (PIL only)."""
import torch
from PIL import Image, ImageDraw


def to_image(x):
    """A [C, H, W] sample in [-1, 1] (1 or 3 channels) as an 8-bit RGB PIL image."""
    x = x.detach().to("cpu", torch.float64).clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    if x.shape[0] == 1:
        x = x.expand(3, *x.shape[1:])
    return Image.fromarray(x[:3].permute(1, 2, 0).numpy(), "RGB")


def grid(rows, row_labels, col_labels, scale=3, pad=4, label_w=110, label_h=16):
    """rows[i][j] a PIL image; labelled rows and columns, each tile enlarged `scale` times."""
    w, h = rows[0][0].size
    tw, th = w * scale, h * scale
    out = Image.new("RGB", (label_w + len(col_labels) * (tw + pad), label_h + len(rows) * (th + pad)), "white")
    draw = ImageDraw.Draw(out)
    for j, text in enumerate(col_labels):
        draw.text((label_w + j * (tw + pad), 2), str(text), fill="black")
    for i, row in enumerate(rows):
        y = label_h + i * (th + pad)
        draw.text((2, y + th // 2 - 6), str(row_labels[i]), fill="black")
        for j, im in enumerate(row):
            out.paste(im.resize((tw, th), Image.NEAREST), (label_w + j * (tw + pad), y))
    return out
