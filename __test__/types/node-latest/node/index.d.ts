// `node` for tsconfig.node-latest.json: the newest @types/node (the devDependency alias
// @types/node-latest), in place of the one the project builds with, for every `types="node"`.
/// <reference path="../../../../node_modules/@types/node-latest/index.d.ts" />
