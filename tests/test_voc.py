"""The VOC reader against the real VOC 2007 sample (checked with a second XML parser) and against bad input."""
from __future__ import annotations

import re
import shutil
from pathlib import Path
from xml.dom import minidom

import pytest

from layersweep.errors import LayersweepError
from layersweep.voc import (
    CLASS_TO_LABEL, VOC_CLASSES, annotation_path, class_flag, parse_annotation, read_class_flags,
    read_split_ids, split_path,
)

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "voc2007-sample"
VOC = FIXTURE / "VOCdevkit" / "VOC2007"
needs_fixture = pytest.mark.skipif(
    not VOC.is_dir(), reason=f"the real VOC 2007 sample {FIXTURE} is absent (it lives in ../shared, not in a plain clone)")


def assert_one_sentence(exc: LayersweepError, path) -> None:
    msg = str(exc)
    assert str(path) in msg, msg
    assert "\n" not in msg and msg.endswith("."), msg
    assert re.search(r"[.!?]\s+[A-Z]", msg) is None, msg  # no second sentence


def _child(node, tag):
    kids = [c for c in node.childNodes if c.nodeType == c.ELEMENT_NODE and c.tagName == tag]
    return kids[0].firstChild.data.strip()


def minidom_objects(xml_path):
    """An independent reading of an annotation: (width, height, [(name, (xmin, ymin, xmax, ymax), difficult, truncated)])."""
    dom = minidom.parse(str(xml_path))
    size = dom.getElementsByTagName("size")[0]
    objs = []
    for obj in dom.documentElement.childNodes:
        if obj.nodeType != obj.ELEMENT_NODE or obj.tagName != "object":
            continue
        box = obj.getElementsByTagName("bndbox")[0]
        objs.append((_child(obj, "name"), tuple(int(_child(box, t)) for t in ("xmin", "ymin", "xmax", "ymax")),
                     _child(obj, "difficult") == "1", _child(obj, "truncated") == "1"))
    return int(_child(size, "width")), int(_child(size, "height")), objs


def test_class_list_is_vocs_alphabetical_order():
    assert len(VOC_CLASSES) == 20 and list(VOC_CLASSES) == sorted(VOC_CLASSES)
    assert CLASS_TO_LABEL["aeroplane"] == 0 and CLASS_TO_LABEL["person"] == 14 and CLASS_TO_LABEL["tvmonitor"] == 19


@needs_fixture
def test_split_lists_match_readme_counts():
    ids = {s: read_split_ids(VOC, s) for s in ("train", "val", "trainval", "test")}
    assert {s: len(v) for s, v in ids.items()} == {"train": 2, "val": 4, "trainval": 6, "test": 7}
    assert sorted(ids["trainval"]) == sorted(ids["train"] + ids["val"])
    assert not set(ids["trainval"]) & set(ids["test"])
    assert sorted(ids["trainval"] + ids["test"]) == sorted(p.stem for p in (VOC / "Annotations").glob("*.xml"))


@needs_fixture
def test_000009_holds_a_horse_and_three_people():
    ann = parse_annotation(annotation_path(VOC, "000009"))
    assert ann.image_id == "000009" and (ann.width, ann.height, ann.depth) == (500, 375, 3)
    assert [o.name for o in ann.objects] == ["horse", "person", "person", "person"]
    assert [o.index for o in ann.objects] == [0, 1, 2, 3]
    horse = ann.objects[0]
    assert horse.bndbox == (69, 172, 270, 330)
    assert horse.box == (68, 171, 270, 330)  # 1-based inclusive -> 0-based half-open: 202 x 159 pixels
    assert horse.label == CLASS_TO_LABEL["horse"] and not horse.difficult and not horse.truncated


@needs_fixture
def test_every_annotation_agrees_with_a_second_parser():
    n_difficult = n_truncated = 0
    names = set()
    for xml in sorted((VOC / "Annotations").glob("*.xml")):
        ann = parse_annotation(xml)
        width, height, objs = minidom_objects(xml)
        assert (ann.width, ann.height) == (width, height)
        got = [(o.name, o.bndbox, o.difficult, o.truncated) for o in ann.objects]
        assert got == objs, xml
        for o in ann.objects:
            xmin, ymin, xmax, ymax = o.box
            assert 0 <= xmin < xmax <= width and 0 <= ymin < ymax <= height
            assert (xmax - xmin, ymax - ymin) == (o.bndbox[2] - o.bndbox[0] + 1, o.bndbox[3] - o.bndbox[1] + 1)
        n_difficult += sum(o[2] for o in objs)
        n_truncated += sum(o[3] for o in objs)
        names |= {o[0] for o in objs}
    assert n_difficult > 0 and n_truncated > 0  # the sample exercises both flags
    assert names == {"aeroplane", "car", "chair", "diningtable", "dog", "horse", "person", "pottedplant",
                     "sofa", "train", "tvmonitor"}  # the README's 11 classes


@needs_fixture
def test_per_class_flags_agree_with_objects():
    """VOC's {class}_{split}.txt: 1 = a non-difficult object of the class, 0 = difficult ones only, -1 = none."""
    objs = {xml.stem: minidom_objects(xml)[2] for xml in (VOC / "Annotations").glob("*.xml")}
    seen_flags = set()
    for split in ("train", "val", "trainval", "test"):
        ids = read_split_ids(VOC, split)
        for name in VOC_CLASSES:
            flags = read_class_flags(VOC, name, split)
            assert sorted(flags) == sorted(ids), (name, split)
            for image_id, flag in flags.items():
                mine = [d for (n, _, d, _) in objs[image_id] if n == name]
                expected = -1 if not mine else (0 if all(mine) else 1)
                assert flag == expected, (name, split, image_id)
                assert class_flag(parse_annotation(annotation_path(VOC, image_id)), name) == expected
                seen_flags.add(flag)
    assert seen_flags >= {1, -1}


def test_part_elements_do_not_shadow_the_object(tmp_path):
    """VOC person objects may hold <part> children with their own <name> and <bndbox>."""
    xml = tmp_path / "000100.xml"
    xml.write_text(
        "<annotation><size><width>100</width><height>80</height><depth>3</depth></size>"
        "<object><name>person</name><pose>Left</pose><truncated>1</truncated><difficult>0</difficult>"
        "<part><name>head</name><bndbox><xmin>5</xmin><ymin>6</ymin><xmax>7</xmax><ymax>8</ymax></bndbox></part>"
        "<bndbox><xmin>1</xmin><ymin>2</ymin><xmax>100</xmax><ymax>80</ymax></bndbox></object>"
        "<object><name>dog</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>10</xmax><ymax>10</ymax></bndbox></object>"
        "</annotation>")
    ann = parse_annotation(xml)
    assert ann.image_id == "000100"
    person, dog = ann.objects
    assert (person.name, person.bndbox, person.box, person.truncated, person.difficult, person.pose) == (
        "person", (1, 2, 100, 80), (0, 1, 100, 80), True, False, "Left")
    # flags absent = 0; a one-pixel box is valid
    assert (dog.name, dog.box, dog.difficult, dog.truncated) == ("dog", (9, 9, 10, 10), False, False)


GOOD_OBJECT = "<object><name>cat</name><difficult>0</difficult><bndbox><xmin>{}</xmin><ymin>{}</ymin><xmax>{}</xmax><ymax>{}</ymax></bndbox></object>"


@pytest.mark.parametrize("body, fragment", [
    ("<annotation><size><width>50</width><height>40</height>", "not well-formed"),
    ("<annotation><size><width>50</width><height>40</height></size>" + GOOD_OBJECT.format(0, 1, 10, 10) + "</annotation>", "outside"),
    ("<annotation><size><width>50</width><height>40</height></size>" + GOOD_OBJECT.format(1, 1, 51, 10) + "</annotation>", "outside"),
    ("<annotation><size><width>50</width><height>40</height></size>" + GOOD_OBJECT.format(1, 1, 10, 41) + "</annotation>", "outside"),
    ("<annotation><size><width>50</width><height>40</height></size>" + GOOD_OBJECT.format(10, 1, 9, 10) + "</annotation>", "empty"),
    ("<annotation><size><width>50</width><height>40</height></size>" + GOOD_OBJECT.format(1, 1, 10, 10).replace("cat", "kitten") + "</annotation>", "unknown class 'kitten'"),
    ("<annotation><size><width>50</width><height>40</height></size>" + GOOD_OBJECT.format(1, 1, "ten", 10) + "</annotation>", "not a number"),
    ("<annotation><size><width>50</width><height>40</height></size>" + GOOD_OBJECT.format(1, 1, 10, 10).replace("<difficult>0", "<difficult>2") + "</annotation>", "not 0 or 1"),
    ("<annotation><size><width>50</width></size></annotation>", "no <height>"),
    ("<annotation></annotation>", "no <size>"),
    ("<annotation><size><width>50</width><height>40</height></size><object><name>cat</name></object></annotation>", "no <bndbox>"),
    ("<voc><size><width>50</width><height>40</height></size></voc>", "<voc>"),
])
def test_bad_annotation_is_one_sentence_naming_the_file(tmp_path, body, fragment):
    xml = tmp_path / "000001.xml"
    xml.write_text(body)
    with pytest.raises(LayersweepError) as err:
        parse_annotation(xml)
    assert_one_sentence(err.value, xml)
    assert fragment in str(err.value)


def test_missing_annotation_and_lists(tmp_path):
    voc = tmp_path / "VOCdevkit" / "VOC2007"
    (voc / "ImageSets" / "Main").mkdir(parents=True)
    with pytest.raises(LayersweepError) as err:
        parse_annotation(annotation_path(voc, "000001"))
    assert_one_sentence(err.value, annotation_path(voc, "000001"))
    with pytest.raises(LayersweepError) as err:
        read_split_ids(voc, "test")
    assert_one_sentence(err.value, split_path(voc, "test"))
    with pytest.raises(LayersweepError) as err:
        read_class_flags(voc, "dog", "val")
    assert_one_sentence(err.value, split_path(voc, "val", "dog"))
    with pytest.raises(LayersweepError, match="Unknown VOC split 'holdout'"):
        read_split_ids(voc, "holdout")
    with pytest.raises(LayersweepError, match="Unknown VOC class 'kitten'"):
        read_class_flags(voc, "kitten", "val")


def test_malformed_lists(tmp_path):
    voc = tmp_path / "VOC2007"
    main = voc / "ImageSets" / "Main"
    main.mkdir(parents=True)
    (main / "train.txt").write_text("000001\n000002 extra\n")
    with pytest.raises(LayersweepError) as err:
        read_split_ids(voc, "train")
    assert_one_sentence(err.value, main / "train.txt")
    (main / "cat_train.txt").write_text("000001 -1\n000002 2\n")
    with pytest.raises(LayersweepError) as err:
        read_class_flags(voc, "cat", "train")
    assert_one_sentence(err.value, main / "cat_train.txt")
    (main / "cat_train.txt").write_text("000001 -1\n000002  0\n\n000003  1\n")
    assert read_class_flags(voc, "cat", "train") == {"000001": -1, "000002": 0, "000003": 1}


@needs_fixture
def test_fixture_copy_with_unknown_class_names_the_file(tmp_path):
    """A real annotation with one edited class name: the error names that file."""
    xml = tmp_path / "000009.xml"
    shutil.copy(annotation_path(VOC, "000009"), xml)
    xml.write_text(xml.read_text().replace("<name>horse</name>", "<name>pony</name>"))
    with pytest.raises(LayersweepError, match="unknown class 'pony' \\(object 0\\)") as err:
        parse_annotation(xml)
    assert_one_sentence(err.value, xml)
