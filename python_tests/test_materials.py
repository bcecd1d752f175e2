"""The materials catalogue: stable IDs, buildable structures, deterministic split."""
import numpy as np
import pytest

from em_accel.sim import materials as M
from em_accel.sim import zone_axis


def test_every_cif_and_prototype_builds_without_hydrogen_and_with_sane_distances():
    entries = M.catalogue("cif") + M.catalogue("prototypes")
    assert len(entries) > 100
    assert len({m.id for m in entries}) == len(entries)
    for m in entries:
        atoms = m.atoms()
        assert len(atoms) > 0 and 1 not in atoms.numbers, m.id
        assert m.elements == tuple(sorted(set(atoms.get_chemical_symbols()))), m.id
        assert M.min_distance(atoms, cutoff=1.0) == float("inf"), m.id  # no overlapping atoms from a wrong Wyckoff setting


def test_ids_round_trip_and_bad_ids_are_named_errors():
    for mid in ("cif:SrTiO3", "proto:perovskite:BaTiO3", "proto:fcc:Au"):
        assert M.from_id(mid).id == mid
    for bad in ("cif:Unobtainium", "proto:fcc:Xx", "random:sg999:Fe4:1", "nonsense"):
        with pytest.raises(M.MaterialError):
            M.from_id(bad)
    with pytest.raises(TypeError):
        M.from_id(3)
    with pytest.raises(ValueError):
        M.catalogue("everything")


def test_random_crystals_are_deterministic_and_rebuild_from_their_id():
    a = M.catalogue("random", n=2, seed=7)
    b = M.catalogue("random", n=2, seed=7)
    assert [m.id for m in a] == [m.id for m in b]
    assert len({m.id for m in a}) == 2
    for m in a:
        sg = int(m.id.split(":")[1][2:])
        assert 16 <= sg <= 230
        x = m.atoms()
        M._build.cache_clear()
        y = M.from_id(m.id).atoms()
        np.testing.assert_allclose(x.get_positions(), y.get_positions())
        assert M.min_distance(x) > 0.8


def test_split_by_chemical_system_is_deterministic_and_about_a_fifth():
    entries = M.catalogue("cif") + M.catalogue("prototypes")
    splits = [M.split_of(m.id) for m in entries]
    assert set(splits) == {"train", "heldout"}
    assert 0.1 < splits.count("heldout") / len(splits) < 0.35
    # one chemical system, one split
    assert M.split_of("cif:Au") == M.split_of("proto:fcc:Au")
    assert M.split_of("cif:SrTiO3") == M.split_of("proto:perovskite:SrTiO3")
    held = M.catalogue("prototypes", split="heldout")
    assert held and all(m.split == "heldout" for m in held)


def test_catalogue_structures_turn_to_a_zone_axis():
    for mid in ("proto:wurtzite:GaN", "proto:spinel:MgAl2O4", "proto:rutile:TiO2"):
        s = zone_axis(M.from_id(mid).atoms(), (0, 0, 1), extent=20.0, thickness=30.0)
        assert len(s) > 10 and s.cell[2] == pytest.approx(30.0)


def test_random_crystal_of_a_split():
    m = M.random_crystal(3, split="heldout")
    assert m.split == "heldout"
