"""Write scikit-learn's digits test split as a data set for `arasc evaluate`, and the calibration
images the accuracy figures of docs/results.md were compiled with (the first 128 training images,
as tests/test_trained.py and benchmarks/trained_accuracy.py calibrate).

    .venv/bin/python scripts/digits_dataset.py OUT_DIR
    .venv/bin/arasc compile digits-cnn --calib OUT_DIR/digits-calib.npy -o d.aras
    .venv/bin/arasc evaluate d.aras --dataset OUT_DIR/digits-test.npz --compare-float digits-cnn
"""
import argparse
import os

import numpy as np

from arasc.isa.atomic import write_atomically
from arasc.models.digits import load_digits_split

CALIBRATION_IMAGES = 128


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", metavar="OUT_DIR")
    folder = parser.parse_args().folder
    os.makedirs(folder, exist_ok=True)
    x_train, _, x_test, y_test = load_digits_split()
    test, calib = os.path.join(folder, "digits-test.npz"), os.path.join(folder, "digits-calib.npy")
    write_atomically([(test, lambda f: np.savez(f, x=x_test.numpy(), labels=y_test.numpy())),
                      (calib, lambda f: np.save(f, x_train[:CALIBRATION_IMAGES].numpy()))])
    print(f"wrote {test} ({len(x_test)} test images and labels) and {calib} ({CALIBRATION_IMAGES} training images)")


if __name__ == "__main__":
    main()
