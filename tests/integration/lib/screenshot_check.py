#!/usr/bin/env python3
"""A headless-Chromium screenshot is a real page, not a blank one: decodes the PNG (8-bit RGB or
RGBA, in plain Python: no PIL on a bare Debian) and requires at least 20 colours and 3% non-white
pixels in a sample. Used by tests/integration/report.sh and study.sh.
    python3 tests/integration/lib/screenshot_check.py PAGE.png"""
import struct, sys, zlib

png = sys.argv[1]
# The screenshot: decode the PNG (8-bit RGB or RGBA) and require a real page, not a blank one.
data = open(png, 'rb').read()
if data[:8] != b'\x89PNG\r\n\x1a\n':
    sys.exit('FAIL: the screenshot is not a PNG')
pos, idat, width = 8, b'', 0
while pos < len(data):
    length, kind = struct.unpack('>I4s', data[pos:pos + 8])
    body = data[pos + 8:pos + 8 + length]
    if kind == b'IHDR':
        width, height, depth, color = struct.unpack('>IIBB', body[:10])
        if depth != 8 or color not in (2, 6):
            sys.exit(f'FAIL: unexpected PNG format (depth {depth}, colour type {color})')
        bpp = 3 if color == 2 else 4
    elif kind == b'IDAT':
        idat += body
    pos += 12 + length
raw, stride = zlib.decompress(idat), width * bpp
prev, pixels = bytearray(stride), []
for y in range(height):
    f, line = raw[y * (stride + 1)], bytearray(raw[y * (stride + 1) + 1:(y + 1) * (stride + 1)])
    for i in range(stride):
        a = line[i - bpp] if i >= bpp else 0
        b, c = prev[i], prev[i - bpp] if i >= bpp else 0
        if f == 1: line[i] = (line[i] + a) & 255
        elif f == 2: line[i] = (line[i] + b) & 255
        elif f == 3: line[i] = (line[i] + (a + b) // 2) & 255
        elif f == 4:
            p = a + b - c
            pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
            line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
    pixels.append(line)
    prev = line
colours, inked = set(), 0
for line in pixels[::4]:
    for x in range(0, stride, bpp * 4):
        rgb = bytes(line[x:x + 3])
        colours.add(rgb)
        inked += rgb != b'\xff\xff\xff'
sampled = len(pixels[::4]) * len(range(0, stride, bpp * 4))
print(f'   screenshot {width}x{height}: {len(colours)} colours, {100 * inked / sampled:.1f}% non-white')
if len(colours) < 20 or inked < sampled * 0.03:
    sys.exit('FAIL: the screenshot is (nearly) blank')
