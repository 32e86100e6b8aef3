// @paperclipai/db (Paperclip's database schema, a dependency of its server) is not installed. The server's
// declarations the type test reads name only these from it, in types the test does not compare.
export type Db = any;
export declare const executionWorkspaces: any;
export declare const workspaceOperations: any;
