// The parts of the official `phoenix` client the stream tests use (the package ships no types).
declare module 'phoenix' {
  export class Push {
    receive(status: 'ok' | 'error' | 'timeout', callback: (response?: any) => void): Push;
  }
  export class Channel {
    state: string;
    join(timeout?: number): Push;
    leave(timeout?: number): Push;
    on(event: string, callback: (payload: any) => void): number;
    onError(callback: (reason?: any) => void): void;
    onClose(callback: () => void): void;
  }
  export class Socket {
    constructor(endPoint: string, opts?: Record<string, unknown>);
    connect(): void;
    disconnect(callback?: () => void, code?: number, reason?: string): void;
    channel(topic: string, params?: object | (() => object)): Channel;
    isConnected(): boolean;
    onOpen(callback: () => void): void;
    onError(callback: (error: unknown) => void): void;
  }
}
