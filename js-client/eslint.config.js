// ESLint (flat config): the recommended rules on every hand-written file (`npm run lint`).
import js from "@eslint/js";
import globals from "globals";

export default [
  // The generated validators are ajv's code, checked by the tests that run them.
  { ignores: ["src/protocol/generated/"] },
  js.configs.recommended,
  {
    languageOptions: {
      ecmaVersion: 2022,
      sourceType: "module",
      // The core runs in Node and in browsers alike, so it may use only what both have.
      globals: globals["shared-node-browser"],
    },
  },
  { files: ["src/browser.js"], languageOptions: { globals: globals.browser } },
  { files: ["src/node/**", "test/**", "scripts/**", "eslint.config.js"], languageOptions: { globals: globals.node } },
];
