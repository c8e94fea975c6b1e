"""Model folders of older formats load through `diffusion.bundle.upgrade`, or are refused clearly."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from diffusion.bundle.folder import HealthGymModel
from diffusion.bundle.upgrade import UpgradeError, upgrade_folder
from diffusion.encoding import FORMAT

FIXTURES = Path(__file__).parent / "fixtures"
V1 = FIXTURES / "model_v1"


def _as_written(frame: pd.DataFrame) -> pd.DataFrame:
    return pd.read_csv(io.StringIO(frame.to_csv(index=False)))


def test_a_format1_folder_decodes_exactly_as_the_code_that_wrote_it():
    hg = HealthGymModel.load(V1)
    assert json.loads((V1 / "encoder.json").read_text()).get("format") is None  # written before formats were recorded
    x = np.load(FIXTURES / "model_v1_tensor.npy")
    np.testing.assert_allclose(hg.sample_tensor(12, seed=3), x, atol=1e-5)  # the same network (float order may differ by threads)
    decoded = hg.protect(hg.encoder.decode(x), seed=3).reset_index(drop=True)  # as `sample` does, from the stored tensor
    pd.testing.assert_frame_equal(_as_written(decoded), pd.read_csv(FIXTURES / "model_v1_sample.csv"))
    assert hg.encoder.decoding.switch_penalty and hg.encoder.decoding.missing_threshold  # its calibration came across
    assert any(d.spike_share > 0 or d.smoothing > 0 for d in hg.encoder.decoding.numbers.values())


def test_upgraded_and_resaved_folders_are_in_the_current_format_and_decode_the_same(tmp_path):
    expected = pd.read_csv(FIXTURES / "model_v1_sample.csv")
    upgraded = upgrade_folder(V1, tmp_path / "upgraded")
    assert json.loads((upgraded / "encoder.json").read_text())["format"] == FORMAT
    x = np.load(FIXTURES / "model_v1_tensor.npy")

    def decoded(folder: Path) -> pd.DataFrame:
        hg = HealthGymModel.load(folder)
        return _as_written(hg.protect(hg.encoder.decode(x), seed=3).reset_index(drop=True))

    pd.testing.assert_frame_equal(decoded(upgraded), expected)
    resaved = HealthGymModel.load(V1).save(tmp_path / "resaved")
    assert json.loads((resaved / "meta.json").read_text())["versions"]["format"] == str(FORMAT)
    pd.testing.assert_frame_equal(decoded(resaved), expected)
    with pytest.raises(FileExistsError):
        upgrade_folder(V1, upgraded)


def _edited_copy(tmp_path: Path, edit) -> Path:
    folder = tmp_path / "old"
    shutil.copytree(V1, folder)
    state = json.loads((folder / "encoder.json").read_text())
    edit(state)
    (folder / "encoder.json").write_text(json.dumps(state))
    return folder


def test_folders_this_version_cannot_read_are_refused_with_the_reason(tmp_path):
    def thresholded(state):  # spikes as folders saved before they were ranked
        state["columns"]["bili"]["numeric"].update(spike_threshold=1.5, spike_scale=0.3, spike_sign=1.0, spike_share=0.01)

    with pytest.raises(UpgradeError, match="bili's spikes by a threshold.*Retrain"):
        HealthGymModel.load(_edited_copy(tmp_path, thresholded))
    future = tmp_path / "future"
    shutil.copytree(V1, future)
    (future / "encoder.json").write_text(json.dumps({"format": FORMAT + 1}))
    with pytest.raises(UpgradeError, match=f"format {FORMAT + 1}"):
        HealthGymModel.load(future)
    shutil.rmtree(tmp_path / "old")
    with pytest.raises(UpgradeError, match="lacks 'time'"):
        HealthGymModel.load(_edited_copy(tmp_path, lambda s: s.pop("time")))


def test_models_registered_before_the_sub_packages_find_their_imports():
    # the code such a model logged imports these two names, conditional queries the second
    import diffusion.bundle.conditional
    from diffusion.bundle import HealthGymModel as registered
    from diffusion.conditional import sample_where as registered_where

    assert registered is HealthGymModel
    assert registered_where is diffusion.bundle.conditional.sample_where
