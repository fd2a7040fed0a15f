"""The 55 ShapeNetCore.v2 synsets, named as PointFlow names them (from latent_3d_points' table)."""

from __future__ import annotations

from collections.abc import Sequence

SYNSET_TO_CATEGORY: dict[str, str] = {
    "02691156": "airplane", "02747177": "can", "02773838": "bag", "02801938": "basket",
    "02808440": "bathtub", "02818832": "bed", "02828884": "bench", "02843684": "birdhouse",
    "02871439": "bookshelf", "02876657": "bottle", "02880940": "bowl", "02924116": "bus",
    "02933112": "cabinet", "02942699": "camera", "02946921": "tin_can", "02954340": "cap",
    "02958343": "car", "02992529": "cellphone", "03001627": "chair", "03046257": "clock",
    "03085013": "keyboard", "03207941": "dishwasher", "03211117": "monitor", "03261776": "earphone",
    "03325088": "faucet", "03337140": "file", "03467517": "guitar", "03513137": "helmet",
    "03593526": "jar", "03624134": "knife", "03636649": "lamp", "03642806": "laptop",
    "03691459": "speaker", "03710193": "mailbox", "03759954": "microphone", "03761084": "microwave",
    "03790512": "motorcycle", "03797390": "mug", "03928116": "piano", "03938244": "pillow",
    "03948459": "pistol", "03991062": "pot", "04004475": "printer", "04074963": "remote_control",
    "04090263": "rifle", "04099429": "rocket", "04225987": "skateboard", "04256520": "sofa",
    "04330267": "stove", "04379243": "table", "04401088": "telephone", "04460130": "tower",
    "04468005": "train", "04530566": "vessel", "04554684": "washer",
}
CATEGORY_TO_SYNSET: dict[str, str] = {v: k for k, v in SYNSET_TO_CATEGORY.items()}
# Other names users meet for the same synsets (ShapeNet's own labels, ShapeNet-55 lists).
ALIASES: dict[str, str] = {
    "motorbike": "03790512", "watercraft": "04530566", "boat": "04530566", "display": "03211117",
    "trash_bin": "02747177", "ashcan": "02747177", "phone": "04401088", "loudspeaker": "03691459",
    "file_cabinet": "03337140", "remote": "04074963", "flowerpot": "03991062",
}


def to_synset(name: str) -> str:
    """Synset id for a category name, alias or synset id (``"chair"`` or ``"03001627"``)."""
    key = str(name).strip().lower()
    if key in SYNSET_TO_CATEGORY:
        return key
    if key in CATEGORY_TO_SYNSET:
        return CATEGORY_TO_SYNSET[key]
    if key in ALIASES:
        return ALIASES[key]
    raise ValueError(
        f"categories: unknown ShapeNet category {name!r}; expected a name such as "
        f"{', '.join(sorted(CATEGORY_TO_SYNSET)[:6])}, ... or an 8-digit synset id "
        f"(see shapediff.data.SYNSET_TO_CATEGORY for all 55)"
    )


def category_name(synset: str) -> str:
    """PointFlow's name of ``synset`` (the id itself when unknown)."""
    return SYNSET_TO_CATEGORY.get(synset, synset)


def resolve_categories(categories: Sequence[str] | str | None) -> list[str] | None:
    """Synset ids for ``categories`` (names or ids, deduplicated in order); None or "all" -> None."""
    if categories is None:
        return None
    if isinstance(categories, str):
        categories = [categories]
    categories = list(categories)
    if not categories:
        raise ValueError("categories: expected a non-empty list of names or synset ids (or null/'all'), got []")
    if any(str(c).lower() == "all" for c in categories):
        return None
    out: list[str] = []
    for c in categories:
        s = to_synset(c)
        if s not in out:
            out.append(s)
    return out
