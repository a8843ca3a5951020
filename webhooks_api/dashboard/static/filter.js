// The endpoint form's payload filter (docs/api.md §11.2): shown as JSON text, read back as
// an object (or null when the field is empty). The service checks the conditions and
// answers a 400 naming the key, which the form shows beside the field.

/** The text the field shows for an endpoint's filter. */
export function filterText(filter) {
  return filter ? JSON.stringify(filter, null, 2) : "";
}

/** The filter to send for the field's text: {value} (null for none), or {error}. */
export function readFilter(text) {
  const trimmed = text.trim();
  if (!trimmed) return { value: null };
  let value;
  try {
    value = JSON.parse(trimmed);
  } catch (error) {
    return { error: `The filter is not valid JSON: ${error.message}` };
  }
  if (value !== null && (typeof value !== "object" || Array.isArray(value))) {
    return { error: 'The filter must be a JSON object, e.g. {"newState": ["started", "stopped"]}.' };
  }
  return { value };
}

/** Whether an error message of the service is about the filter (shown beside its field). */
export function isFilterError(message) {
  return /^filter\b/.test(message);
}
