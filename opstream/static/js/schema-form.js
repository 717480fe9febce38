// From a kind's JSON Schema to form fields and back to params, and from a 422 problem to
// messages per field. Pure functions (no DOM), unit-tested under node; form.js renders them.

const SIMPLE_TYPES = new Set(["integer", "number", "string", "boolean"]);

function typeOf(schema) {
  let type = schema.type;
  if (Array.isArray(type)) {
    const concrete = type.filter((t) => t !== "null");
    type = concrete.length === 1 ? concrete[0] : null;
  }
  if (!type && Array.isArray(schema.enum)) type = "string";
  if (!type && schema.const !== undefined) type = typeof schema.const === "number" ? "number" : "string";
  return type;
}

/**
 * The fields a form can offer for `schema`, or `null` when it needs the raw-JSON editor
 * (nested objects, arrays, combinators — anything a flat form would get wrong).
 */
export function fieldsFromSchema(schema) {
  if (!schema || typeof schema !== "object") return null;
  if (schema.type !== undefined && schema.type !== "object") return null;
  if (schema.oneOf || schema.anyOf || schema.allOf || schema.$ref) return null;
  const properties = schema.properties || {};
  const required = new Set(Array.isArray(schema.required) ? schema.required : []);
  const fields = [];
  for (const [name, prop] of Object.entries(properties)) {
    if (!prop || typeof prop !== "object") return null;
    const type = typeOf(prop);
    if (!SIMPLE_TYPES.has(type)) return null;
    let choices = null;
    if (Array.isArray(prop.enum)) choices = prop.enum;
    else if (prop.const !== undefined) choices = [prop.const];
    fields.push({
      name,
      type,
      label: prop.title || labelFor(name),
      description: prop.description || "",
      required: required.has(name),
      minimum: prop.minimum ?? null,
      maximum: prop.maximum ?? null,
      defaultValue: prop.default ?? (choices && choices.length === 1 ? choices[0] : null),
      example: Array.isArray(prop.examples) && prop.examples.length ? prop.examples[0] : null,
      choices,
    });
  }
  return fields;
}

/** "intervalMs" → "Interval ms", "reportType" → "Report type". */
export function labelFor(name) {
  const words = String(name)
    .replace(/[_-]+/g, " ")
    .replace(/([a-z0-9])([A-Z])/g, "$1 $2")
    .toLowerCase();
  return words.charAt(0).toUpperCase() + words.slice(1);
}

/**
 * Params from the form's raw values (strings from inputs, booleans from checkboxes).
 * Empty optional fields are left out; the server's schema is the judge of the rest, so a
 * value that is not a number is sent as typed and comes back as the field's 422 message.
 */
export function paramsFromValues(fields, values) {
  const params = {};
  for (const field of fields) {
    const raw = values[field.name];
    if (field.type === "boolean") {
      if (raw !== undefined && raw !== null) params[field.name] = Boolean(raw);
      continue;
    }
    if (raw === undefined || raw === null || String(raw).trim() === "") continue;
    const text = String(raw).trim();
    if (field.type === "integer" || field.type === "number") {
      const n = Number(text);
      params[field.name] = Number.isFinite(n) ? n : text;
    } else if (field.choices && field.choices.length && typeof field.choices[0] === "number") {
      const n = Number(text);
      params[field.name] = Number.isFinite(n) ? n : text;
    } else {
      params[field.name] = text;
    }
  }
  return params;
}

/** An example params object for the raw-JSON editor: defaults, examples or minimums. */
export function exampleParams(schema) {
  const fields = fieldsFromSchema(schema);
  if (!fields) return {};
  const example = {};
  for (const field of fields) {
    if (!field.required && field.defaultValue === null) continue;
    let value = field.defaultValue ?? field.example;
    if (value === null) {
      if (field.choices) value = field.choices[0];
      else if (field.type === "integer" || field.type === "number") value = field.minimum ?? 0;
      else if (field.type === "boolean") value = false;
      else value = "";
    }
    example[field.name] = value;
  }
  return example;
}

/**
 * A 422 problem's messages by param name: `{"year": ["..."]}`, with whatever cannot be tied
 * to a param (the kind, the body as a whole) under `""`.
 */
export function errorsByField(problem) {
  const out = {};
  const add = (key, message) => {
    (out[key] ||= []).push(message);
  };
  const errors = problem && Array.isArray(problem.errors) ? problem.errors : [];
  for (const error of errors) {
    const message = error.message || error.detail || "is not valid";
    add(paramName(error), message);
  }
  if (!errors.length && problem) add("", problem.detail || problem.title || "The request was refused.");
  return out;
}

function paramName(error) {
  if (typeof error.pointer === "string" && error.pointer.startsWith("/params/")) {
    return unescapePointer(error.pointer.slice("/params/".length).split("/")[0]);
  }
  if (typeof error.field === "string" && error.field.startsWith("params.")) {
    return error.field.slice("params.".length).split(".")[0];
  }
  if (error.field === "kind" || error.pointer === "/kind") return "kind";
  return "";
}

function unescapePointer(token) {
  return token.replace(/~1/g, "/").replace(/~0/g, "~");
}
