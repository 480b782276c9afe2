"""UWS 1.1 XML documents (job, job list, results, parameters), built with ElementTree."""
from __future__ import annotations

import xml.etree.ElementTree as ET

from czar.tap.uws import Job, iso

__all__ = ["job_list_xml", "job_xml", "parameters_xml", "results_xml"]

UWS = "http://www.ivoa.net/xml/UWS/v1.0"
XLINK = "http://www.w3.org/1999/xlink"
XSI = "http://www.w3.org/2001/XMLSchema-instance"
ET.register_namespace("uws", UWS)
ET.register_namespace("xlink", XLINK)
ET.register_namespace("xsi", XSI)


def _q(ns: str, tag: str) -> str:
    return f"{{{ns}}}{tag}"


def _el(parent: ET.Element, tag: str, text: str | None = None, nil: bool = False, **attrs) -> ET.Element:
    e = ET.SubElement(parent, _q(UWS, tag), {k: v for k, v in attrs.items() if v is not None})
    if text is not None:
        e.text = text
    elif nil:
        e.set(_q(XSI, "nil"), "true")
    return e


def _doc(root: ET.Element) -> bytes:
    return ET.tostring(root, encoding="UTF-8", xml_declaration=True)


def _parameters(parent: ET.Element, job: Job) -> None:
    params = _el(parent, "parameters")
    for name, value in job.parameters:
        _el(params, "parameter", value, id=name)


def _results(parent: ET.Element, job: Job, job_url: str) -> None:
    results = _el(parent, "results")
    if job.result is not None:
        r = _el(results, "result", id="result")
        r.set(_q(XLINK, "type"), "simple")
        r.set(_q(XLINK, "href"), f"{job_url}/results/result")
        r.set("mime-type", job.result[1])


def job_xml(job: Job, job_url: str) -> bytes:
    root = ET.Element(_q(UWS, "job"), {"version": "1.1"})
    _el(root, "jobId", job.job_id)
    if job.run_id is not None:
        _el(root, "runId", job.run_id)
    _el(root, "ownerId", job.owner, nil=True)
    _el(root, "phase", job.phase)
    _el(root, "quote", None, nil=True)
    _el(root, "creationTime", iso(job.creation_time))
    _el(root, "startTime", iso(job.start_time), nil=True)
    _el(root, "endTime", iso(job.end_time), nil=True)
    _el(root, "executionDuration", str(job.execution_duration))
    _el(root, "destruction", iso(job.destruction), nil=True)
    _parameters(root, job)
    _results(root, job, job_url)
    if job.phase == "ERROR" and job.error:
        summary = _el(root, "errorSummary", type="fatal", hasDetail="true")
        _el(summary, "message", job.error)
    return _doc(root)


def job_list_xml(jobs: list[Job], base_url: str) -> bytes:
    root = ET.Element(_q(UWS, "jobs"), {"version": "1.1"})
    for job in jobs:
        ref = _el(root, "jobref", id=job.job_id)
        ref.set(_q(XLINK, "type"), "simple")
        ref.set(_q(XLINK, "href"), f"{base_url}/{job.job_id}")
        _el(ref, "phase", job.phase)
        if job.run_id is not None:
            _el(ref, "runId", job.run_id)
        _el(ref, "ownerId", job.owner, nil=True)
        _el(ref, "creationTime", iso(job.creation_time))
    return _doc(root)


def results_xml(job: Job, job_url: str) -> bytes:
    root = ET.Element(_q(UWS, "results"))
    if job.result is not None:
        r = _el(root, "result", id="result")
        r.set(_q(XLINK, "type"), "simple")
        r.set(_q(XLINK, "href"), f"{job_url}/results/result")
        r.set("mime-type", job.result[1])
    return _doc(root)


def parameters_xml(job: Job) -> bytes:
    root = ET.Element(_q(UWS, "parameters"))
    for name, value in job.parameters:
        _el(root, "parameter", value, id=name)
    return _doc(root)
