"""One test per verifier and parser rule (runtime/verify.py, isa/parser.py): each edits the compiled
digits-cnn program the way the rule forbids and checks the refusal's place and that its message
names the instruction or directive. Cases marked `issue 14` are the bugs its fuzzing found
(accepted programs that ran wrong, or internal errors)."""
import re

import numpy as np
import pytest
from fuzzing import Case, base_from_files, example_inputs, run_in_process

from conftest import compiled

MVM0 = "    mvm %features.0 = features.0(%x.q) blocks(0..0) rows(0) : u8[8,16,8,8]"
MAXPOOL = re.compile(r"^    sfu %features\.3 = maxpool2d\(%features\.0\) \{(.*)\} : u8\[8,16,4,4\]$", re.M)
LAYER0 = re.compile(r"^(\.layer features\.0 qconv2d \{)(.*?)(\} \[.*)$", re.M)
INPUT = re.compile(r"^(\.input x f32\[8,1,8,8\] \{)(.*)(\})$", re.M)


def base():
    _, path = compiled("digits-cnn")
    b = base_from_files("digits-cnn", path)
    b.inputs = example_inputs(b)
    return b


def sub(pattern, replacement, count=1):
    """An edit replacing a regex; the test fails if it matches nothing (the edit would test nothing)."""
    def edit(text):
        new, n = re.subn(pattern, replacement, text, count=count, flags=re.M)
        assert n, f"{pattern!r} not in the program"
        return new
    return edit


def set_attr(line_re, key, value):
    """Set attribute `key` of the first line matching line_re (a regex with groups prefix, attrs, suffix)."""
    def edit(text):
        m = line_re.search(text)
        assert m, line_re.pattern
        attrs = re.sub(rf"\b{key}=(\[[^\]]*\]|[^,}}]*)", f"{key}={value}", m.group(2)) if f"{key}=" in m.group(2) \
            else m.group(2) + f", {key}={value}"
        return text[:m.start()] + m.group(1) + attrs + m.group(3) + text[m.end():]
    return edit


def drop_attr(line_re, key):
    def edit(text):
        m = line_re.search(text)
        attrs = ", ".join(a for a in re.split(r", (?![^\[]*\])", m.group(2)) if not a.startswith(f"{key}="))
        return text[:m.start()] + m.group(1) + attrs + m.group(3) + text[m.end():]
    return edit


LAYER_ATTR = lambda key, value: set_attr(LAYER0, key, value)  # noqa: E731
INPUT_ATTR = lambda key, value: set_attr(INPUT, key, value)  # noqa: E731
POOL = re.compile(r"^(    sfu %features\.3 = maxpool2d\(%features\.0\) \{)(.*)(\} : u8\[8,16,4,4\])$", re.M)

# rule -> (edit, regex the first line of the refusal must match after "file:line:col: ")
RULES = {
    # layer attributes, roles and weights (issue 14: out-of-range quantization changed the outputs)
    "layer multiplier range": (LAYER_ATTR("multiplier", 2**62), r"\.layer features\.0: attribute multiplier: "
                               r"4611686018427387904 is outside 0\.\.2147483647"),
    "layer x_zp range": (LAYER_ATTR("x_zp", 300), r"\.layer features\.0: attribute x_zp: 300 is outside 0\.\.255"),
    "layer out_zp range": (LAYER_ATTR("out_zp", -2), r"\.layer features\.0: attribute out_zp: -2 is outside"),
    "layer shift range": (LAYER_ATTR("shift", 0), r"\.layer features\.0: attribute shift: 0 is outside 1\.\.62"),
    "layer attribute type": (LAYER_ATTR("stride", 1), r"\.layer features\.0: attribute stride: expected a list of 2"),
    "layer unknown attribute": (LAYER_ATTR("strid", "[1, 1]"), r"\.layer features\.0: unknown attributes strid"),
    "layer missing attribute": (drop_attr(LAYER0, "groups"), r"\.layer features\.0: missing attributes groups"),
    "layer unknown role": (sub(r"\[bias=@features\.0\.bias", "[biac=@features.0.bias"),
                           r"\.layer features\.0: unknown weight role 'biac'; qconv2d takes: weight, bias"),
    "layer missing weight": (sub(r", weight=@features\.0\.weight : u8\[16,1,3,3\]", ""),
                             r"\.layer features\.0: missing weight role weight"),
    "layer role dtype": (sub(r"bias=@features\.0\.bias : i32\[16\]", "bias=@features.0.bias : i64[16]"),
                         r"\.layer features\.0: weight bias=@features\.0\.bias is i64; qconv2d takes bias as i32"),
    "layer weight type": (sub(r"u8\[16,1,3,3\]", "u8[16,1,3,4]"), r"\.layer features\.0: weight @features\.0\.weight: "
                          r"the file holds uint8\[16, 1, 3, 3\], the program says u8\[16,1,3,4\]"),
    "layer tile map k": (LAYER_ATTR("k", 10), r"\.layer features\.0: attribute k=10, but the weight"),
    "layer tile map n": (LAYER_ATTR("n", 17), r"\.layer features\.0: attribute n=17, but the weight"),
    "layer tile map segments": (LAYER_ATTR("segments", 2), r"\.layer features\.0: attribute segments=2"),
    "layer op": (sub(r"^\.layer features\.0 qconv2d", ".layer features.0 conv2d"),
                 r"\.layer features\.0: op conv2d does not run on crossbars"),
    "layer twice": (sub(r"^(\.layer features\.0 .*)$", r"\1\n\1"), r"\.layer features\.0: a second layer"),
    # ports
    "input zp range": (INPUT_ATTR("zp", 1000), r"\.input x: attribute zp: 1000 is outside 0\.\.255"),
    "input scale zero": (INPUT_ATTR("scale", 0), r"\.input x: attribute scale: 0 is outside 1e-30\.\.1e\+30"),
    "input scale nan": (INPUT_ATTR("scale", "nan"), r"\.input x: attribute scale: expected a number"),
    "input half quantized": (drop_attr(INPUT, "zp"), r"\.input x: give both scale and zp"),
    "input unknown attribute": (INPUT_ATTR("zq", 3), r"\.input x: attribute zq: unknown attribute"),
    "output unquantized": (sub(r"^(\.output classifier\.dq %classifier f32\[8,10\]) \{.*\}$", r"\1"),
                           r"\.output classifier\.dq: give both scale and zp"),
    "output never stored": (sub(r"^    store %classifier -> classifier\.dq\n", ""),
                            r"\.output classifier\.dq is never stored"),
    # values and their types
    "mvm overwrites a live value": (sub(r"mvm %features\.4 = ", "mvm %features.3 = "),  # issue 14
                                    r"mvm: %features\.3 is defined twice"),
    "sfu overwrites a live value": (sub(r"sfu %features\.7 = ", "sfu %features.3 = "), r"sfu: %features\.3 is defined twice"),
    "mvm declared type": (sub(re.escape(MVM0), MVM0.replace("u8[8,16,8,8]", "u8[1,16,8,8]")),  # issue 14
                          r"mvm: %features\.0 is declared u8\[1,16,8,8\], but mvm makes u8\[8,16,8,8\]"),
    "mvm reads u8": (sub(r"^    load %x\.q <- x : u8\[8,1,8,8\]$", "    load %x.q <- x : i64[8,1,8,8]"),
                     r"load: %x\.q is declared i64\[8,1,8,8\], but load makes u8\[8,1,8,8\]"),
    "load dtype": (sub(r"^    load %x\.q <- x : u8", "    load %x.q <- x : i8"), r"load: %x\.q is declared i8"),
    "load port": (sub(r"^    load %x\.q <- x ", "    load %x.q <- y "), r"load: no \.input y"),
    "u8[] type": (sub(r"^    load %x\.q <- x : u8\[8,1,8,8\]", "    load %x.q <- x : u8[]"),  # issue 14
                  r"load: %x\.q is declared u8\[\], but load makes u8\[8,1,8,8\]"),
    "value too large": (sub(r"^    load %x\.q <- x : u8\[8,1,8,8\]", "    load %x.q <- x : u8[100000,100000,10000]"),
                        r"load %x\.q: u8\[100000,100000,10000\] needs 100,000,000,000,000 B, more than this machine"),
    "read before defined": (sub(r"\(%x\.q\)", "(%nothing)"), r"mvm: %nothing is read before"),
    "sfu declared type": (sub(r"(maxpool2d\(%features\.0\) \{.*\}) : u8\[8,16,4,4\]", r"\1 : u8[8,16,4,5]"),
                          r"sfu: %features\.3 is declared u8\[8,16,4,5\], but sfu makes u8\[8,16,4,4\]"),
    "sfu unknown attribute": (set_attr(POOL, "foo", 1), r"sfu: maxpool2d: unknown attributes foo"),
    "sfu missing attribute": (drop_attr(POOL, "ceil_mode"), r"sfu: maxpool2d: missing attributes ceil_mode"),
    "sfu attribute type": (set_attr(POOL, "kernel", 2), r"sfu: maxpool2d: attribute kernel: expected a list of 2"),
    "sfu inputs": (sub(r"maxpool2d\(%features\.0\)", "maxpool2d(%features.0, %x.q)"),
                   r"sfu: maxpool2d takes 1\.\.1 inputs, got 2"),
    "sfu input dtype": (sub(r"^(    sfu %flatten = .*)$", r"\1\n    bank {in=[4], out=[5]}\n    sfu %f = dequantize(%flatten) {scale=0.5, zp=0} : "
                            r"f32[8,128]\n    sfu %q = qrelu(%f) {zp=0} : f32[8,128]"),
                        r"sfu: qrelu takes u8, i16 inputs, %f is f32\[8,128\]"),
    "sfu operands do not fit": (sub(r"\{shape=\[8, 128\]\}", "{shape=[7, 128]}"),
                                r"sfu: reshape: the operands u8\[8,32,2,2\] do not fit"),
    "sfu unknown op": (sub(r"= maxpool2d\(", "= maxpool3d("), r"sfu: unknown SFU op maxpool3d"),
    "sfu table": (sub(r"^(    sfu %flatten = .*)$", r"\1\n    sfu %t = qlut(%flatten) [table=@features.0.weight : u8[16,1,3,3]]"
                      r" : u8[8,128]"), r"sfu: qlut takes a table \[L\] or \[C, L\]"),
    "store port": (sub(r"store %classifier -> classifier\.dq", "store %classifier -> nowhere"),  # issue 14
                   r"store: no \.output nowhere"),
    "store value": (sub(r"store %classifier -> ", "store %flatten -> "), r"store: \.output classifier\.dq is %classifier"),
    "store twice": (sub(r"^(    store %classifier -> classifier\.dq)$", r"\1\n\1"), r"store: \.output classifier\.dq "
                    r"is stored a second time"),
    "output shape": (sub(r"^\.output classifier\.dq %classifier f32\[8,10\]", ".output classifier.dq %classifier f32[8,11]"),
                     r"store: %classifier is (u8|i16)\[8,10\]; \.output classifier\.dq dequantizes a u8 or i16 \[8,11\]"),
    # streams (issue 14: store or sfu in the write stream, a release before the mvm, were internal errors)
    "store in the write stream": (sub(r"^\.stream write$", ".stream write\n    store %classifier -> classifier.dq"),
                                  r"store: runs in the compute stream, not in the write stream"),
    "sfu in the write stream": (sub(r"^\.stream write$", ".stream write\n    sfu %z = relu(%x.q) : u8[8,1,8,8]"),
                                r"sfu: runs in the compute stream, not in the write stream"),
    "release in the write stream": (sub(r"^\.stream write$", ".stream write\n    release rows(5)"),
                                    r"release: runs in the compute stream, not in the write stream"),
    "wr in the compute stream": (sub(r"^\.stream compute$", ".stream compute\n    wr features.0[0] -> rows(9)"),
                                 r"wr: runs in the write stream, not in the compute stream"),
    "release before the mvm": (sub(r"^(    wait \$w\.features\.0)$", r"\1\n    release rows(0)"),
                               r"mvm: APU row 0 must hold features\.0\[0\] .* leave nothing there \(a release empties it\)"),
    "release racing a write": (sub(r"^(    load %x\.q .*)$", r"    release rows(0)\n\1"),
                               r"mvm: APU row 0: the release at line \d+ and the wr at line \d+ are not ordered"),
    "row out of range": (sub(r"wr features\.0\[0\] -> rows\(0\)", "wr features.0[0] -> rows(999)"),
                         r"wr: APU row 999 is out of range"),
    "block out of range": (sub(r"wr features\.4\[1\]", "wr features.4[7]"), r"wr: block 7 out of range"),
    "missing signal": (sub(r"^    signal \$w\.features\.0\n", ""), r"wait: wait \$w\.features\.0 has no matching signal"),
    "deadlock": (sub(r"^    wait \$w\.features\.0$", "    wait $c.features.4"), r"wait: deadlock"),
    "bank out of range": (sub(r"bank \{in=\[0\], out=\[4\]\}", "bank {in=[0], out=[40]}"), r"bank: bank index out of range"),
    "bank in and out apart": (sub(r"bank \{in=\[0\], out=\[4\]\}", "bank {in=[0], out=[0]}"),
                              r"bank: a bank holds a layer's inputs or its outputs, never both"),
    "mvm segments cover the blocks": (sub(r"blocks\(0\.\.1\) rows\(1\.\.2\)", "blocks(1..1) rows(2)"),
                                      r"\.layer features\.4: its mvm instructions must cover its blocks 0\.\.1 once, "
                                      r"in order; they cover \[\(1, 1\)\]"),
    "mvm segments agree": (lambda text: set_attr(re.compile(r"^(\.layer features\.4 qconv2d \{)(.*?)(\} \[.*)$", re.M),
                                                 "segments", 2)(sub(
        r"^    mvm %features\.4 = features\.4\(%features\.3\) blocks\(0\.\.1\) rows\(1\.\.2\) : u8\[8,32,4,4\]$",
        "    mvm %features.4 = features.4(%features.3) blocks(0..0) rows(1) : u8[8,32,4,4]\n"
        "    mvm %features.4 = features.4(%x.q) blocks(1..1) rows(2) : u8[8,32,4,4]")(text)),
                           r"mvm: a segment of features\.4 must read, define and type the same values as its first"),
    "mvm rows whole replicas": (sub(r"blocks\(0\.\.1\) rows\(1\.\.2\)", "blocks(0..1) rows(1..3)"),
                                r"mvm: 3 rows for 2 blocks"),
    "row listed twice": (sub(r"release rows\(1\.\.2\)", "release rows(1, 1)"), r"release: an APU row is listed twice"),
    "no such layer": (sub(r"wr features\.0\[0\] -> rows\(0\)", "wr features.9[0] -> rows(0)"), r"wr: no \.layer features\.9"),
    "token signalled twice": (sub(r"^(    signal \$w\.features\.0)$", r"\1\n\1"),
                              r"signal: token \$w\.features\.0 is signalled twice"),
    "weight not in the file": (sub(r"bias=@features\.0\.bias :", "bias=@features.0.bias2 :"),
                               r"\.layer features\.0: weight @features\.0\.bias2 is not in fuzz\.arasw"),
    "port twice": (sub(r"^(\.input x .*)$", r"\1\n\1"), r"\.input x: a second port of this name"),
    "output is f32": (sub(r"^\.output classifier\.dq %classifier f32", ".output classifier.dq %classifier u8"),
                      r"\.output classifier\.dq: a quantized output is f32 outside the chip, not u8"),
    "layer groups divide the channels": (LAYER_ATTR("groups", 3), r"\.layer features\.0: qconv2d takes a 4-D weight with "
                                         r"output channels divisible by groups=3"),
    "layer bias per channel": (sub(r"bias=@features\.0\.bias : i32\[16\]", "bias=@features.4.bias : i32[32]"),
                               r"\.layer features\.0: bias i32\[32\] must be \[16\], one per output channel"),
    "mvm input fits the layer": (sub(r"features\.4\(%features\.3\)", "features.4(%x.q)"),
                                 r"mvm: features\.4: input u8\[8,1,8,8\] has 1 channels"),
    "maxpool2d windows fit memory": (set_attr(POOL, "padding", "[60000, 60000]"),
                                     r"sfu maxpool2d's windows: .* needs [\d,]+ B, more than this machine can simulate"),
    "bank capacity": (sub(r"bank \{in=\[0\], out=\[4\]\}", "bank {in=[0], out=[]}"), r"mvm: inputs .* do not fit the banks"),
}

PARSER = {  # isa/parser.py: refused while parsing (all issue 14 internal errors but the first)
    "duplicate attribute": (LAYER_ATTR("k", "9, k=3"), r"attribute k is given twice"),
    "huge literal": (LAYER_ATTR("k", "9" * 5000), r"integer literal of 5,000 characters: too large"),
    "deep nesting": (LAYER_ATTR("k", "[" * 1000 + "]" * 1000), r"brackets nested deeper than 16"),
    "huge row range": (sub(r"rows\(0\)", "rows(0..100000000000)"), r"more than 1,048,576 rows listed"),
    "bank attribute type": (sub(r"bank \{in=\[0\], out=\[4\]\}", "bank {in=5, out=[4]}"), r"bank in: expected a list"),
    "too many dimensions": (sub(r": u8\[8,1,8,8\]", ": u8[1,1,1,1,1,1,1,1,1]"), r"a type of 9 dimensions"),
}


# Main's newer ops and values (qrequant, qlut with an int16 index, qsoftmax, qmasked_softmax, i16
# and bool values, per-channel requantization, the id ops) on the compiled bert-base-small.
SCORES = "%scaled_dot_product_attention.scores"
QMATMUL = re.compile(r"^(    sfu %scaled_dot_product_attention\.scores = qmatmul\(.*?\) \{)(.*?)(\} : .*)$", re.M)
QREQUANT = re.compile(r"^(    sfu %embeddings\.LayerNorm\.n = qrequant\(%embeddings\.LayerNorm\) \{)(.*?)(\} : .*)$", re.M)
LEVELS = re.compile(r"^(    sfu %encoder\.layer\.0\.intermediate\.dense\.t = qrequant\(.*?\) \{)(.*?)(\} : .*)$", re.M)
KEY = re.compile(r"^(\.layer encoder\.layer\.0\.attention\.self\.key qlinear \{)(.*?)(\} \[.*)$", re.M)
QUERY = "encoder.layer.0.attention.self.query"
QSOFTMAX_TABLE = "table=@scaled_dot_product_attention.probs.table : i32[65536]"
# a per-channel shift: 64 positive int32 values in 1..62, a valid but short softmax table
SHORT_TABLE = f"table=@{QUERY}.shift : i32[64]"


def after_scaled(*lines):
    """Insert instructions after the first attention's scaled scores (i16[1,4,16,16])."""
    return sub(r"^(    sfu %scaled_dot_product_attention\.scaled = qrequant.*)$",
               "\\1\n" + "\n".join("    " + line for line in lines))


MASK = "sfu %m = compare(%scaled_dot_product_attention.scaled) {cmp=\"gt\", scalar=0} : bool[1,4,16,16]"
MASKED = ("sfu %ms = qmasked_softmax(%scaled_dot_product_attention.scaled, %m) {{dim=3, multiplier=2053041814, "
          "out_zp=0, shift=44, wide=true}} [{table}] : i16[1,4,16,16]")

NEW_OP_RULES = {
    "qmatmul int64 overflow of int16 operands": (set_attr(QMATMUL, "multiplier", 1 << 30),
                                                 r"sfu: qmatmul of i16\[1,4,16,16\] and i16\[1,4,16,16\] \(K=16\) "
                                                 r"with multiplier=1073741824 may overflow the int64 requantization"),
    "qrequant levels range": (set_attr(LEVELS, "levels", 4096), r"sfu: qrequant: attribute levels: 4096 is outside "
                              r"1\.\.4095"),
    "qrequant int16 zero point range": (set_attr(QREQUANT, "x_zp", 40000), r"sfu: qrequant: attribute x_zp: 40000 is "
                                        r"outside -32768\.\.32767"),
    "qrequant requantization given neither way": (drop_attr(QREQUANT, "multiplier"), r"sfu: qrequant: multiplier is "
                                                  r"given neither as an attribute nor as a weight"),
    "qrequant per-channel weight per channel": (
        sub(r"(qrequant\(%embeddings\.LayerNorm\) \{)multiplier=\d+, (.*?\}) : u8",
            r"\1\2 [multiplier=@encoder.layer.0.intermediate.dense.multiplier : i32[256]] : u8"),
        r"sfu: qrequant: weight multiplier=@encoder\.layer\.0\.intermediate\.dense\.multiplier is i32\[256\]; "
        r"a per-channel multiplier has one value per channel \(64\)"),
    "layer requantization given both ways": (set_attr(KEY, "multiplier", 5), r"\.layer encoder\.layer\.0\.attention\."
                                             r"self\.key: multiplier is given both as an attribute and as a weight"),
    "layer per-channel values in range": (sub(rf"shift=@{re.escape(QUERY)}\.shift : i32\[64\]",
                                              f"shift=@{QUERY}.bias : i32[64]"),
                                          rf"\.layer {re.escape(QUERY)}: weight shift=@{re.escape(QUERY)}\.bias: "
                                          r"-?\d+ is outside 1\.\.62"),
    "layer int64 overflow": (set_attr(KEY, "shift", 56), r"\.layer encoder\.layer\.0\.attention\.self\.key: "
                             r"multiplier=\d+ and shift=56 with K=64 .* may overflow the int64 requantization"),
    "wide layer makes i16": (sub(rf"(mvm %{re.escape(QUERY)} = .*) : i16\[1,16,64\]", r"\1 : u8[1,16,64]"),
                             rf"mvm: %{re.escape(QUERY)} is declared u8\[1,16,64\], but mvm makes i16\[1,16,64\]"),
    "qlut int16 index without levels": (after_scaled("sfu %t = qlut(%scaled_dot_product_attention.scaled) "
                                                     "[table=@pooler.activation.table : u8[4096]] : u8[1,4,16,16]"),
                                        r"sfu: qlut indexes its table by %scaled_dot_product_attention\.scaled, "
                                        r"i16\[1,4,16,16\], whose codes may be negative"),
    "qlut table rows per channel": (
        sub(r"\[table=@encoder\.layer\.0\.intermediate\.intermediate_act_fn\.table : u8\[4096\]\]",
            f"[table=@{QUERY}.weight : u8[64,64]]"),
        r"sfu: qlut takes a table \[L\] or \[C, L\] with C the input's size along dim and 4096 <= L <= 4096 "
        r"\(an entry per code of i16\[1,16,256\]\), got \[64, 64\]"),
    "qlut table shorter than the index's codes": (  # [C, L] with C = 256 channels along dim 2, but L = 64
        sub(r"qlut\(%encoder\.layer\.0\.intermediate\.dense\.t\) \[table=@encoder\.layer\.0\.intermediate\."
            r"intermediate_act_fn\.table : u8\[4096\]\]",
            "qlut(%encoder.layer.0.intermediate.dense.t) {dim=2} [table=@encoder.layer.0.intermediate.dense.weight "
            ": u8[256,64]]"),
        r"sfu: qlut takes a table \[L\] or \[C, L\] with C the input's size along dim and 4096 <= L <= 4096 "
        r"\(an entry per code of i16\[1,16,256\]\), got \[256, 64\]"),
    "qsoftmax table values": (sub(re.escape(QSOFTMAX_TABLE), f"table=@{QUERY}.bias : i32[64]"),
                              r"sfu: qsoftmax takes a table \[L\], 1 <= L <= 65536, of exponentials in 0\.\.65536 "
                              r"with table\[0\] > 0, got \[64\]"),
    "qmasked_softmax table of 256 entries at least": (after_scaled(MASK, MASKED.format(table=SHORT_TABLE)),
                                                      r"sfu: qmasked_softmax takes a table \[L\], 256 <= L <= 65536"),
    "qmasked_softmax operands": (after_scaled(MASKED.format(table=QSOFTMAX_TABLE).replace(", %m)", ")")),
                                 r"sfu: qmasked_softmax takes 2\.\.2 inputs, got 1"),
    "bool operands": (after_scaled(MASK, "sfu %n = qrelu(%m) {zp=0} : u8[1,4,16,16]"),
                      r"sfu: qrelu takes u8, i16 inputs, %m is bool\[1,4,16,16\]"),
    "id op choice": (after_scaled(MASK.replace('"gt"', '"gtx"')), r"sfu: compare: attribute cmp: expected one of "
                     r'"eq", "ne", "lt", "le", "gt", "ge", got \'gtx\''),
    "id op dtypes": (after_scaled("sfu %e = embedding(%scaled_dot_product_attention.scaled) "
                                  "[table=@embeddings.word_embeddings.weight : i16[1000,64]] : i16[1,4,16,16,64]"),
                     r"sfu: embedding takes i32, i64 inputs, %scaled_dot_product_attention\.scaled is i16"),
    "mvm reads u8 activations": (sub(rf"{re.escape(QUERY)}\(%embeddings\.LayerNorm\.n\)", f"{QUERY}(%embeddings.LayerNorm)"),
                                 rf"mvm: qlinear {re.escape(QUERY)} reads u8 activations, %embeddings\.LayerNorm is "
                                 r"i16\[1,16,64\]"),
    "unquantized input's load type": (sub(r"load %input_ids <- input_ids : i64\[1,16\]",
                                          "load %input_ids <- input_ids : i32[1,16]"),
                                      r"load: %input_ids is declared i32\[1,16\], but load makes i64\[1,16\]"),
}


def refusal(edit, model="digits-cnn", names_instruction=True):
    b = base() if model == "digits-cnn" else bert()
    outcome, first = run_in_process(Case(edit(b.text), b.weights, how="test"))
    assert outcome == "bad-located", (outcome, first)
    assert re.match(r"fuzz\.aras:\d+:\d+: ", first), first
    message = first.split(": ", 1)[1]
    # the refusal names the instruction or directive it is about
    assert not names_instruction or re.match(r"(\.(layer|input|output) \S+|(wr|signal|wait|load|store|bank|mvm|sfu|"
                                             r"release)\b)", message), message
    return message


def bert():
    _, path = compiled("bert-base-small")
    return base_from_files("bert-base-small", path)


@pytest.mark.parametrize("rule", sorted(RULES))
def test_verifier_rule(rule):
    edit, message = RULES[rule]
    assert re.search(message, refusal(edit)), refusal(edit)


@pytest.mark.parametrize("rule", sorted(NEW_OP_RULES))
def test_verifier_rule_of_newer_ops(rule):
    edit, message = NEW_OP_RULES[rule]
    got = refusal(edit, "bert-base-small")
    assert re.search(message, got), got


def weight_refusal(change, edit=lambda text: text):
    """The refusal of bert-base-small with its side file's tensors changed by `change` (the program's
    digest of the file updated to match)."""
    import hashlib

    from safetensors.numpy import load as load_tensors

    from arasc.isa.weights import weights_bytes

    b = bert()
    tensors = {name: array.copy() for name, array in load_tensors(b.weights).items()}
    change(tensors)
    data = weights_bytes(tensors)
    text = re.sub(r"^(\.weights \S+ sha256=)\w+", lambda m: m.group(1) + hashlib.sha256(data).hexdigest(),
                  edit(b.text), count=1, flags=re.M)
    outcome, first = run_in_process(Case(text, data, how="test"))
    assert outcome == "bad-located", (outcome, first)
    return first


def test_per_channel_shift_bounds_the_int64_requantization():
    """A layer's per-channel shift enters the overflow bound by its largest channel."""
    def change(tensors):
        tensors[f"{QUERY}.shift"][5] = 58

    first = weight_refusal(change)
    assert re.match(rf"fuzz\.aras:9:1: \.layer {re.escape(QUERY)}: multiplier=\d+ and shift=58 with K=64 .* may "
                    r"overflow the int64 requantization", first), first


def test_float_weights_hold_no_nan():
    def change(tensors):
        tensors["embeddings.LayerNorm.weight"][3] = np.nan

    first = weight_refusal(change)
    assert re.match(r"fuzz\.aras:68:1: sfu qlayernorm: weight @embeddings\.LayerNorm\.weight holds NaN or infinite "
                    r"values", first), first


def test_softmax_table_holds_no_negative_exponential():
    def change(tensors):
        tensors["scaled_dot_product_attention.probs.table"][7] = -1

    first = weight_refusal(change)
    assert re.match(r"fuzz\.aras:105:5: sfu: qsoftmax takes a table \[L\], 1 <= L <= 65536, of exponentials in "
                    r"0\.\.65536 with table\[0\] > 0, got \[65536\]", first), first


def test_qlut_table_has_a_row_per_channel_along_dim():
    """A [C, L] table long enough for the index's codes, but C is not the input's size along dim."""
    act = "encoder.layer.0.intermediate.intermediate_act_fn.table"

    def change(tensors):
        tensors[act] = np.tile(tensors[act], (3, 1))

    first = weight_refusal(change, sub(rf"{re.escape(act)} : u8\[4096\]", f"{act} : u8[3,4096]"))
    assert re.match(r"fuzz\.aras:131:5: sfu: qlut takes a table \[L\] or \[C, L\] with C the input's size along dim "
                    r"and 4096 <= L <= 4096 \(an entry per code of i16\[1,16,256\]\), got \[3, 4096\]", first), first


def test_softmax_table_first_entry_is_positive():
    """table[0] stands for exp(0): a zero there lets a row's exponentials sum to zero."""
    def change(tensors):
        tensors["scaled_dot_product_attention.probs.table"][0] = 0

    first = weight_refusal(change)
    assert re.match(r"fuzz\.aras:105:5: sfu: qsoftmax takes a table \[L\], 1 <= L <= 65536, of exponentials in "
                    r"0\.\.65536 with table\[0\] > 0, got \[65536\]", first), first


def test_the_unedited_bert_program_is_accepted():
    """The edits above are what the verifier refuses: the program they start from runs right."""
    b = bert()
    assert run_in_process(Case(b.text, b.weights, how="as compiled")) == ("ok", "")


@pytest.mark.parametrize("rule", sorted(PARSER))
def test_parser_rule(rule):
    edit, message = PARSER[rule]
    got = refusal(edit, names_instruction=False)  # a syntax error names the token, not yet an instruction
    assert re.search(message, got), got


def test_non_utf8_text_is_refused_at_its_line_and_column():  # issue 14: the largest class of internal errors
    b = base()
    data = b.text.encode()
    at = data.index(b"mvm %features.0") + 4
    text = (data[:at] + b"\xff" + data[at + 1:]).decode("utf-8", errors="surrogateescape")
    outcome, first = run_in_process(Case(text, b.weights, how="test"))
    line, column = b.text[:at].count("\n") + 1, at - b.text.rindex("\n", 0, at)
    assert outcome == "bad-located" and first.startswith(f"fuzz.aras:{line}:{column}: byte 0xff is not UTF-8"), first


def test_every_sfu_op_and_layer_op_has_a_spec_for_each_attribute_it_reads():
    """The opcode table is complete: each op of the interpreter has a spec, every attribute a kind."""
    from arasc.isa.opcodes import LAYER_OPS, SFU_SPECS
    from arasc.runtime.sfu import SFU_OPS

    assert set(SFU_SPECS) == set(SFU_OPS)
    assert set(LAYER_OPS) == {"qconv2d", "qlinear"}
    for spec in list(SFU_SPECS.values()) + list(LAYER_OPS.values()):
        for kind in list(spec.attrs.values()) + list(spec.optional.values()):
            assert hasattr(kind, "problem") and str(kind)


def test_embedding_ids_outside_the_table_are_bad_input(tmp_path):  # issue 14: out-of-range token ids
    from arasc.cli import main

    _, path = compiled("bert-base-small")
    ids = np.full((1, 16), 10**6, np.int64)
    np.save(tmp_path / "ids.npy", ids)
    assert main(["run", path, "--input", str(tmp_path / "ids.npy"), "--inferences", "1"]) == 2


def test_docs_hold_the_spec_table_as_the_opcode_table_makes_it():
    from pathlib import Path

    from arasc.isa.opcodes import spec_table_markdown

    assert spec_table_markdown() in (Path(__file__).parent.parent / "docs" / "isa.md").read_text()


def test_values_that_do_not_fit_the_machine_together_are_refused(monkeypatch):
    """Together the values need more memory than the verifier grants the program. The check of
    each value and temporary on its own is switched off here (its rules have their own tests):
    digits-cnn's convolution windows alone need more than all its values."""
    import arasc.runtime.verify as verify
    from arasc.isa.parser import parse_program

    b = base()
    program = parse_program(b.text, "fuzz.aras")
    values = {i["out"]: i["type"].nbytes for i in program.compute if i.opcode in ("load", "mvm", "sfu")}
    total = sum(values.values())
    monkeypatch.setattr(verify.Verifier, "check_size", lambda *args, **kwargs: None)
    monkeypatch.setattr(verify, "machine_memory_bytes", lambda: int((total - 1) / verify.MEMORY_SHARE))
    message = refusal(lambda text: text)
    assert re.search(r"the program's values need more than [\d,]+ B, more than this machine can simulate", message), message


def test_an_op_making_a_type_no_aras_type_holds_is_refused(monkeypatch):
    """The verifier reads an SFU op's result type off a run on zeros; a result dtype outside the
    .aras types (a float64 from a changed op) is refused at the instruction."""
    import arasc.runtime.verify as verify

    maxpool = verify.SFU_OPS["maxpool2d"]
    monkeypatch.setitem(verify.SFU_OPS, "maxpool2d", lambda xs, attrs, weights: maxpool(xs, attrs, weights).astype(np.float64))
    message = refusal(lambda text: text)
    assert re.search(r"sfu: maxpool2d makes float64 values, which no \.aras type holds", message), message
