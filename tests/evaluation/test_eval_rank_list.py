"""Rank-list PNGs from a tiny synthetic gallery."""
import cv2
import numpy as np
import torch

from plugins.evaluation import rank_list
from plugins.evaluation.rank_list import BORDER, CELL, GAP, top_matches, write_rank_lists


def test_png_of_expected_size_with_green_and_red_borders(tmp_path):
    paths = []
    for i in range(14):
        p = tmp_path / f"img{i}.jpg"
        cv2.imwrite(str(p), np.full((40 + i, 20, 3), 10 * i, np.uint8))
        paths.append(str(p))
    gen = torch.Generator().manual_seed(0)
    q_feat, g_feat = torch.randn(2, 8, generator=gen), torch.randn(12, 8, generator=gen)
    g_feat[0] = q_feat[0]                                       # junk: same pid and camera
    g_feat[1] = q_feat[0] + 0.01 * torch.randn(8, generator=gen)  # the true match
    q_pids, g_pids = [0, 1], [0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9]
    q_cams, g_cams = [0, 0], [0] + [1] * 11          # gallery 0 is junk for query 0
    written = write_rank_lists(q_feat, g_feat, paths[:2], paths[2:], q_pids, g_pids, q_cams,
                               g_cams, str(tmp_path / "out"), topk=10)
    assert len(written) == 2
    img = cv2.imread(written[0])
    assert img.shape == (CELL[1] + 2 * BORDER, 11 * (CELL[0] + 2 * BORDER) + GAP, 3)
    order, correct = top_matches(q_feat, g_feat, q_pids, g_pids, q_cams, g_cams)[0]
    assert 0 not in order and len(order) == 10        # junk skipped
    for k, ok in enumerate(correct):                  # border pixel of the k-th gallery cell
        x = (k + 1) * (CELL[0] + 2 * BORDER) + GAP + 1
        color = rank_list.CORRECT_COLOR if ok else rank_list.WRONG_COLOR
        assert np.abs(img[1, x].astype(int) - color).max() <= 2
    assert order[0] == 1 and correct[0] and correct.sum() == 1   # gallery 1: the only match


def test_command_with_a_model_builder_callable(tmp_path, monkeypatch):
    paths = []
    for i in range(8):
        p = tmp_path / f"p{i}.png"
        cv2.imwrite(str(p), np.full((32, 16, 3), 30 * i, np.uint8))
        paths.append(str(p))
    query = [(paths[i], i, 0, {}) for i in range(3)]
    gallery = [(paths[3 + i], i % 3, 1, {}) for i in range(5)]
    monkeypatch.setattr(rank_list, "_load_test_items", lambda cfg, name: (query, gallery))

    class MeanColour(torch.nn.Module):   # features: mean colour per channel
        def forward(self, batch):
            return batch["images"].float().mean(dim=(2, 3)) + 1

    (tmp_path / "cfg.yml").write_text("INPUT:\n  SIZE_TEST: [32, 16]\n")
    written = rank_list.main(["--config-file", str(tmp_path / "cfg.yml"), "--dataset", "Toy",
                              "--num-queries", "2", "--topk", "4", "--out", str(tmp_path / "o"),
                              "DATALOADER.NUM_WORKERS", "0", "MODEL.DEVICE", "cpu"],
                             build_model=lambda cfg: MeanColour())
    assert len(written) == 2
    assert cv2.imread(written[0]).shape[1] == 5 * (CELL[0] + 2 * BORDER) + GAP
