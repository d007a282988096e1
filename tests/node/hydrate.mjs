// Reads DICOM SR files with OHIF's own hydration code (@cornerstonejs/adapters over dcmjs) and prints, as
// one JSON document on stdout, every Cobb angle annotation it makes of each: its label, its four points in
// image pixels and its angle (or {"error": ...} for an SR it cannot read). Usage: node hydrate.mjs SR.dcm ...
import fs from "node:fs";
import dcmjs from "dcmjs";
import { metaData } from "@cornerstonejs/core";
import { adaptersSR } from "@cornerstonejs/adapters";

const { MeasurementReport } = adaptersSR.Cornerstone3D;
// Each film is its own image, on a plane where world coordinates are image pixels (row and column
// spacing 1, origin 0): a hydrated point is then the film pixel the SR's SCOORD names.
const plane = { imagePositionPatient: [0, 0, 0], rowCosines: [1, 0, 0], columnCosines: [0, 1, 0],
  rowPixelSpacing: 1, columnPixelSpacing: 1, frameOfReferenceUID: "1.2.3" };
metaData.addProvider((type, imageId) => (type === "imagePlaneModule" && imageId.startsWith("film:") ? plane : undefined), 10000);

const out = {};
for (const path of process.argv.slice(2)) {
  try { out[path] = hydrate(path); } catch (e) { out[path] = {error: String(e && e.message || e)}; }
}
process.stdout.write(JSON.stringify(out, null, 1));

function hydrate(path) {  // as OHIF reads an SR: dcmjs parses it, the adapters make its annotations
  const buf = fs.readFileSync(path);
  const dict = dcmjs.data.DicomMessage.readFile(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
  const ds = dcmjs.data.DicomMetaDictionary.naturalizeDataset(dict.dict);
  const refs = {};
  for (const s of [].concat(ds.CurrentRequestedProcedureEvidenceSequence || [])) {
    for (const series of [].concat(s.ReferencedSeriesSequence || [])) {
      for (const sop of [].concat(series.ReferencedSOPSequence || [])) {
        refs[`${sop.ReferencedSOPInstanceUID}:1`] = `film:${sop.ReferencedSOPInstanceUID}`;
      }
    }
  }
  const state = MeasurementReport.generateToolState(ds, refs, metaData);
  return (state.CobbAngle || []).map((m) => ({
    label: m.annotation.data.label,
    image: m.annotation.metadata.referencedImageId,
    points: m.annotation.data.handles.points.map((p) => [p[0], p[1]]),
    angle: Object.values(m.annotation.data.cachedStats)[0]?.angle ?? null,
  }));
}
