// Renders a sky.yaml template: placeholders are whole YAML scalars `${key}` replaced structurally with
// YAML nodes built from typed values, so no input can inject YAML or shell. Pure: no I/O.
import { isScalar, parseDocument, visit, type Document } from "yaml";

const PLACEHOLDER = /^\$\{([A-Za-z][A-Za-z0-9]*)\}$/;

export type TemplateValue = string | number | boolean | null | undefined | TemplateValue[] | { [k: string]: TemplateValue };

export type RenderResult = { ok: true; yaml: string; task: Record<string, unknown> } | { ok: false; errors: string[] };

export function renderTemplate(templateText: string, values: Record<string, TemplateValue>, templateName: string): RenderResult {
  const doc: Document = parseDocument(templateText, { prettyErrors: true });
  if (doc.errors.length > 0) return { ok: false, errors: doc.errors.map((e) => `${templateName}: ${e.message}`) };
  const errors: string[] = [];
  visit(doc, {
    Pair(_key, pair) {
      const v = pair.value;
      if (!isScalar(v) || typeof v.value !== "string") return undefined;
      const m = PLACEHOLDER.exec(v.value);
      if (!m) return undefined;
      const key = m[1] ?? "";
      if (!(key in values)) {
        errors.push(`${templateName}: unknown placeholder \${${key}} (known: ${Object.keys(values).join(", ")})`);
        return undefined;
      }
      const value = values[key];
      if (value === null || value === undefined) return visit.REMOVE;
      pair.value = doc.createNode(value);
      // Do not descend into the value just inserted: user text that looks like `${key}` stays text.
      return visit.SKIP;
    },
    Scalar(_key, node) {
      if (typeof node.value === "string" && PLACEHOLDER.test(node.value)) {
        errors.push(`${templateName}: placeholder ${node.value} must be the whole value of a key`);
      }
    },
  });
  if (errors.length > 0) return { ok: false, errors };
  // The template's own header explains placeholders; the rendered file says where it came from instead.
  doc.commentBefore = ` Rendered by tpu-deploy from ${templateName}; edit the template, not this file.`;
  const task = doc.toJS() as unknown;
  if (typeof task !== "object" || task === null || Array.isArray(task)) {
    return { ok: false, errors: [`${templateName}: a task must be a YAML mapping`] };
  }
  return { ok: true, yaml: doc.toString({ lineWidth: 0 }), task: task as Record<string, unknown> };
}
