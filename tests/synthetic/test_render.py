"""Renderer: exact masks, background independence, attributes readable from pixels."""
from dataclasses import replace

import numpy as np
import pytest

from datasets_ext.synthetic.domains import DOMAINS
from datasets_ext.synthetic.render import Style, View, render
from datasets_ext.synthetic.spec import ATTRIBUTE_NAMES, VIEWPOINTS, nearest_colour, sample_identity

ROUGH = Style(res_scale=0.5, blur=0.9, noise=0.03, gain=0.8, cast=(1.1, 1.0, 0.8),
              response=((1.0, 0.05, 0.0), (0.0, 0.95, 0.02), (0.03, 0.0, 1.05)),
              light_grad=0.3, light_angle=0.4, vignette=0.3, haze=0.1, saturation=0.7,
              contrast=1.1, gamma=1.1)


def people(n, seed=0):
    return [sample_identity(np.random.default_rng([seed, i])) for i in range(n)]


@pytest.mark.parametrize("style", [Style(), ROUGH, DOMAINS[3].style], ids=["neutral", "rough", "night"])
def test_person_pixels_do_not_depend_on_the_background(style):
    rng = np.random.default_rng(0)
    for i, idn in enumerate(people(8)):
        view = View(viewpoint=VIEWPOINTS[i % 4], height=0.85, top=0.08, cx=0.45 + 0.02 * i)
        bg1, bg2 = rng.random((128, 64, 3)), rng.random((128, 64, 3))
        a = render(idn, view, style, background=bg1, noise_seed=i)
        b = render(idn, view, style, background=bg2, noise_seed=i)
        inside = a.mask > 0
        assert np.array_equal(a.mask, b.mask) and np.array_equal(a.parsing, b.parsing)
        assert np.array_equal(a.mask > 0, a.parsing > 0)
        assert np.array_equal(a.image[inside], b.image[inside])
        assert (a.image[~inside] != b.image[~inside]).any(axis=-1).mean() > 0.9


def test_every_viewpoint_and_size_gives_aligned_labels():
    for idn in people(6, seed=1):
        for vp in VIEWPOINTS:
            for size, res in (((128, 64), 1.0), ((64, 32), 0.45), ((96, 48), 0.7)):
                r = render(idn, View(viewpoint=vp), Style(res_scale=res), size)
                assert r.image.shape == size + (3,) and r.parsing.shape == size
                assert np.array_equal(r.mask == 255, r.parsing > 0)
                assert {1, 2, 4, 6} <= set(np.unique(r.parsing).tolist())  # head, upper, lower, shoes


def test_clothing_colours_match_attributes_under_neutral_light():
    up, low = ATTRIBUTE_NAMES.index("upper_color"), ATTRIBUTE_NAMES.index("lower_color")
    for idn in people(40, seed=2):
        idn = replace(idn, pattern=0, bag=0)           # plain garment: one colour to read back
        for vp in ("front", "back"):
            r = render(idn, View(viewpoint=vp), Style())
            for part, attr in ((2, up), (4, low)):
                mean = r.image[r.parsing == part].mean(0)
                assert nearest_colour(mean) == r.attributes[attr], (vp, part, mean)


def test_shape_attributes_are_visible():
    bag = ATTRIBUTE_NAMES.index("bag")
    for idn in people(40, seed=3):
        for vp in ("front", "back"):
            r = render(idn, View(viewpoint=vp, stride=0.03), Style())
            assert (r.parsing == 7).any() == (r.attributes[bag] != 0)
            legs_bare = (r.parsing == 5).sum()
            assert (legs_bare > 0) == (idn.lower_type != 0), idn.lower_type  # shorts/skirt show legs
        short = render(replace(idn, sleeve_long=False), View(), Style())
        long = render(replace(idn, sleeve_long=True), View(), Style())
        assert (short.parsing == 3).sum() > 2 * (long.parsing == 3).sum()
