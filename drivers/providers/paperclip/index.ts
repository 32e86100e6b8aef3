// Paperclip plugins as sandbox providers (ENVRUN_PAPERCLIP_PLUGINS): the package loader, the provider over a
// plugin worker's environment methods, and the worker process itself.
export { loadPaperclipPlugins, readPaperclipPackage, type LoadedPaperclipPlugins } from './load.js';
export { createPaperclipProvider, type PaperclipProviderOptions } from './provider.js';
export { PluginWorker, PluginWorkerError, type PluginWorkerOptions } from './worker.js';
