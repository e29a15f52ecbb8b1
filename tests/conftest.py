"""Shared fixtures: the digits data set in both sample shapes."""

import pytest

from snncompile.data import digits


@pytest.fixture(scope="session")
def digits_image():
    return digits(image=True)


@pytest.fixture(scope="session")
def digits_flat():
    return digits(image=False)
