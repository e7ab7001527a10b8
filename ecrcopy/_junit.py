"""JUnit XML for GitLab's Tests tab: one test case per image."""

from __future__ import annotations

import xml.etree.ElementTree as ET

from ._report import CopyReport

__all__ = ["junit_xml"]


def junit_xml(report: CopyReport, *, suite: str = "ecrcopy") -> str:
    """The report as a JUnit ``<testsuites>`` document; failures carry their reason and error."""
    totals = report.totals
    root = ET.Element("testsuites", name=suite)
    element = ET.SubElement(
        root,
        "testsuite",
        name=suite,
        tests=str(totals.images),
        failures=str(totals.failed),
        errors="0",
        skipped=str(totals.skipped),
        time=f"{report.duration_seconds:.3f}",
    )
    for image in report.images:
        destination, tag = _split(image.destination)
        case = ET.SubElement(
            element,
            "testcase",
            classname=destination,
            name=tag or image.destination,
            time=f"{image.duration_seconds:.3f}",
        )
        if image.status == "failed":
            failure = ET.SubElement(case, "failure", type=image.reason or "error", message=image.error or "failed")
            failure.text = f"{image.source} -> {image.destination}\n{image.error or ''}"
        elif image.status == "skipped":
            ET.SubElement(case, "skipped", message=f"{image.reason or 'skipped'}: {image.error or ''}".rstrip(": "))
        out = (
            f"{image.status} {image.source} -> {image.destination} digest={image.digest} "
            f"uploaded={image.blobs_uploaded} mounted={image.blobs_mounted} existing={image.blobs_existing}"
        )
        ET.SubElement(case, "system-out").text = out
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _split(reference: str) -> tuple[str, str]:
    """``host/repo:tag`` -> (``host/repo``, ``tag``); ``host/repo@digest`` -> (``host/repo``, ``digest``)."""
    if "@" in reference:
        name, _, digest = reference.partition("@")
        return name, digest
    name, _, tag = reference.rpartition(":")
    if not name or "/" in tag:
        return reference, ""
    return name, tag
