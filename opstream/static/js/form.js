// The "start an operation" form: kinds from GET /kinds, fields generated from each kind's
// JSON Schema (raw JSON where a flat form cannot express it), and a 422 problem's messages
// shown next to the fields they are about.

import * as api from "./api.js";
import { h, toast } from "./dom.js";
import { errorsByField, exampleParams, fieldsFromSchema, paramsFromValues } from "./schema-form.js";

export class StartForm {
  constructor({ onStarted }) {
    this.onStarted = onStarted;
    this.form = document.getElementById("start-form");
    this.kindSelect = document.getElementById("kind");
    this.kindDescription = document.getElementById("kind-description");
    this.generated = document.getElementById("params-generated");
    this.rawBox = document.getElementById("params-raw");
    this.rawText = document.getElementById("params-json");
    this.rawToggle = document.getElementById("raw-toggle");
    this.formError = document.getElementById("form-error");
    this.button = document.getElementById("start-button");
    this.kinds = [];
    this.fields = null;
    this.inputs = new Map();

    this.kindSelect.addEventListener("change", () => this.selectKind(this.kindSelect.value));
    this.rawToggle.addEventListener("change", () => this.setRaw(this.rawToggle.checked));
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.submit();
    });
  }

  async load() {
    try {
      this.kinds = await api.listKinds();
    } catch (error) {
      this.kindSelect.replaceChildren(h("option", { value: "" }, "Kinds unavailable"));
      this.showFormError(`Could not load the operation kinds: ${error.message}`);
      return [];
    }
    this.kindSelect.replaceChildren(
      ...this.kinds.map((kind) => h("option", { value: kind.name }, kind.name)),
    );
    if (!this.kinds.length) this.kindSelect.append(h("option", { value: "" }, "No kinds registered"));
    this.selectKind(this.kinds[0] ? this.kinds[0].name : "");
    return this.kinds;
  }

  selectKind(name) {
    const kind = this.kinds.find((k) => k.name === name);
    this.kindSelect.value = name;
    this.kindDescription.replaceChildren(...withCode(kind ? kind.description || "" : ""));
    this.clearErrors();
    this.inputs = new Map();
    this.generated.replaceChildren();
    const schema = kind ? kind.paramsSchema || { type: "object" } : { type: "object" };
    this.fields = fieldsFromSchema(schema);
    this.rawText.value = JSON.stringify(exampleParams(schema), null, 2);
    if (this.fields) {
      for (const field of this.fields) this.generated.append(this.fieldElement(field));
      if (!this.fields.length) this.generated.append(h("p", { class: "hint" }, "This kind takes no parameters."));
    }
    this.rawToggle.disabled = !this.fields;
    this.setRaw(!this.fields || this.rawToggle.checked);
  }

  fieldElement(field) {
    const id = `param-${field.name}`;
    const hintId = `${id}-hint`;
    const errorId = `${id}-error`;
    let input;
    if (field.choices) {
      input = h("select", { id, name: field.name });
      if (!field.required) input.append(h("option", { value: "" }, "—"));
      for (const choice of field.choices) input.append(h("option", { value: String(choice) }, String(choice)));
      if (field.defaultValue !== null) input.value = String(field.defaultValue);
    } else if (field.type === "boolean") {
      input = h("input", { id, name: field.name, type: "checkbox" });
      input.checked = Boolean(field.defaultValue);
    } else if (field.type === "integer" || field.type === "number") {
      input = h("input", {
        id,
        name: field.name,
        type: "number",
        inputmode: field.type === "integer" ? "numeric" : "decimal",
        step: field.type === "integer" ? "1" : "any",
        min: field.minimum,
        max: field.maximum,
        placeholder: field.example ?? field.minimum ?? "",
      });
      if (field.defaultValue !== null) input.value = String(field.defaultValue);
    } else {
      input = h("input", { id, name: field.name, type: "text", placeholder: field.example ?? "" });
      if (field.defaultValue !== null) input.value = String(field.defaultValue);
    }
    input.setAttribute("aria-describedby", `${hintId} ${errorId}`);
    if (field.required) input.setAttribute("aria-required", "true");
    this.inputs.set(field.name, input);
    const range = [];
    if (field.minimum !== null) range.push(`min ${field.minimum}`);
    if (field.maximum !== null) range.push(`max ${field.maximum}`);
    const hint = [field.description, range.join(", ")].filter(Boolean).join(" · ");
    const label = h("label", { for: id }, field.label, field.required ? h("span", { class: "required", "aria-hidden": "true" }, "*") : null);
    return h(
      "div",
      { class: "field", dataset: { field: field.name } },
      field.type === "boolean" ? h("label", { class: "check", for: id }, input, field.label) : [label, input],
      h("p", { class: "hint", id: hintId }, hint),
      h("p", { class: "field-error", id: errorId, hidden: true }),
    );
  }

  setRaw(raw) {
    if (raw && this.fields && this.rawBox.hidden) {
      // Switching to JSON: carry over what was typed.
      this.rawText.value = JSON.stringify(this.collectFromFields(), null, 2);
    } else if (!raw && this.fields && !this.rawBox.hidden) {
      // And back: fill the fields from the JSON, where it parses.
      try {
        const params = JSON.parse(this.rawText.value || "{}");
        for (const [name, input] of this.inputs) {
          if (!(name in params)) continue;
          if (input.type === "checkbox") input.checked = Boolean(params[name]);
          else input.value = String(params[name]);
        }
      } catch {
        // keep the fields as they were
      }
    }
    this.rawToggle.checked = raw;
    this.rawBox.hidden = !raw;
    this.generated.hidden = raw;
  }

  collectFromFields() {
    const values = {};
    for (const [name, input] of this.inputs) values[name] = input.type === "checkbox" ? input.checked : input.value;
    return paramsFromValues(this.fields || [], values);
  }

  clearErrors() {
    this.formError.hidden = true;
    this.formError.textContent = "";
    for (const el of this.form.querySelectorAll(".field-error")) {
      el.hidden = true;
      el.textContent = "";
    }
    for (const el of this.form.querySelectorAll("[aria-invalid]")) el.removeAttribute("aria-invalid");
  }

  showFormError(message) {
    this.formError.textContent = message;
    this.formError.hidden = false;
  }

  /** Show each message next to its field; what has no field goes above the button. */
  showErrors(byField) {
    let first = null;
    const loose = [];
    for (const [name, messages] of Object.entries(byField)) {
      const text = messages.join("; ");
      let input = null;
      let errorEl = null;
      if (name === "kind") {
        input = this.kindSelect;
        errorEl = document.getElementById("kind-error");
      } else if (name && this.rawBox.hidden && this.inputs.has(name)) {
        input = this.inputs.get(name);
        errorEl = document.getElementById(`param-${name}-error`);
      } else if (name && !this.rawBox.hidden) {
        input = this.rawText;
        errorEl = document.getElementById("params-json-error");
        const previous = errorEl.hidden ? "" : `${errorEl.textContent}\n`;
        errorEl.textContent = `${previous}${name}: ${text}`;
        errorEl.hidden = false;
        input.setAttribute("aria-invalid", "true");
        first ||= input;
        continue;
      }
      if (!input || !errorEl) {
        loose.push(name ? `${name}: ${text}` : text);
        continue;
      }
      errorEl.textContent = text;
      errorEl.hidden = false;
      input.setAttribute("aria-invalid", "true");
      first ||= input;
    }
    if (loose.length) this.showFormError(loose.join(" "));
    if (first) first.focus();
    else if (loose.length) this.formError.focus?.();
  }

  readParams() {
    if (!this.rawBox.hidden) {
      const text = this.rawText.value.trim();
      if (!text) return { params: {} };
      try {
        const params = JSON.parse(text);
        if (!params || typeof params !== "object" || Array.isArray(params)) {
          return { errors: { __raw: ["Parameters must be a JSON object, like {\"steps\": 10}."] } };
        }
        return { params };
      } catch (error) {
        return { errors: { __raw: [`Not valid JSON: ${error.message}`] } };
      }
    }
    const errors = {};
    for (const [name, input] of this.inputs) {
      if (input.validity && input.validity.badInput) errors[name] = ["Enter a number."];
    }
    if (Object.keys(errors).length) return { errors };
    return { params: this.collectFromFields() };
  }

  async submit() {
    this.clearErrors();
    const kind = this.kindSelect.value;
    if (!kind) {
      this.showErrors({ kind: ["Choose a kind."] });
      return;
    }
    const { params, errors } = this.readParams();
    if (errors) {
      if (errors.__raw) {
        const el = document.getElementById("params-json-error");
        el.textContent = errors.__raw.join(" ");
        el.hidden = false;
        this.rawText.setAttribute("aria-invalid", "true");
        this.rawText.focus();
      } else {
        this.showErrors(errors);
      }
      return;
    }
    this.button.disabled = true;
    this.button.setAttribute("aria-busy", "true");
    try {
      const doc = await api.startOperation(kind, params);
      toast(`Started ${doc.kind} ${doc.id}`);
      this.onStarted(doc, document.getElementById("open-after").checked);
    } catch (error) {
      if (error.status === 422 || error.status === 400) this.showErrors(errorsByField(error.problem));
      else this.showFormError(`Could not start the operation: ${error.message}`);
    } finally {
      this.button.disabled = false;
      this.button.removeAttribute("aria-busy");
    }
  }

  focus() {
    this.kindSelect.focus();
  }
}

/** Text with `backticked` words as <code>, the way kind descriptions are written. */
function withCode(text) {
  return String(text)
    .split(/`([^`]+)`/)
    .map((part, i) => (i % 2 ? h("code", {}, part) : part))
    .filter((part) => part !== "");
}
