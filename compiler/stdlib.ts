// The standard mask library, written in the .tile language itself and checked like user code. Every
// spec sees these names; a user mask of the same name is an error (shadowing a library mask silently
// would change what `attention_tile(2)` means in someone else's spec).
export const STDLIB_FILE = "<stdlib>";

export const STDLIB_SOURCE = `# tilec standard masks. Coordinates: q.frame, q.row, q.col, q.index, q.text, q.video (and k.*).
# Video masks hold for video×video pairs only: combine them with text_to_all / all_to_text for MM-DiT.

# Dense attention.
mask full = true

# Efficient-vDiT global reference frames: frame f is global in an n-frame family iff f == i*frames/n
# for some i < n (floor division), e.g. 2 of 8 frames -> {0, 4}; 3 of 24 -> {0, 8, 16}.
mask global_frame(f, n) = any i in 0 .. n - 1: f == i * frames / n

# Efficient-vDiT Attention Tile "n:(frames-n)": each frame attends to itself (the diagonal tile) and to
# the n global frames; the global frames attend to every frame.
mask attention_tile(n) = q.video and k.video and
  (q.frame == k.frame or global_frame(q.frame, n) or global_frame(k.frame, n))

# Temporal band: frames at most w apart.
mask temporal_band(w) = q.video and k.video and abs(q.frame - k.frame) <= w

# Causal over frames: a frame sees itself and earlier frames (block-causal video generation).
mask causal_frames = q.video and k.video and k.frame <= q.frame

# One axis of a sliding tile window: key tile kt is within the window of w tiles around query tile qt,
# the window's centre clamped so that the window stays inside the n tiles of this axis.
mask tile_window(qt, kt, n, w) = abs(kt - clamp(qt, w / 2, n - 1 - w / 2)) <= w / 2

# STA-style 3D sliding tile attention: tiles of tf×th×tw tokens, windows of wt×wh×ww tiles.
mask sliding_tile(tf, th, tw, wt, wh, ww) = q.video and k.video
  and tile_window(q.frame / tf, k.frame / tf, (frames + tf - 1) / tf, wt)
  and tile_window(q.row / th, k.row / th, (height + th - 1) / th, wh)
  and tile_window(q.col / tw, k.col / tw, (width + tw - 1) / tw, ww)

# Joint text/video attention (MM-DiT): text queries attend to everything, everything attends to text.
mask text_to_all = q.text
mask all_to_text = k.text
mask text_joint = q.text or k.text
`;
