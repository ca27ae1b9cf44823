"""torch-ipc README "Client-Server" example, in Python.

Run: python examples/ipc_client_server.py
"""

import torch

from nonsense_hpc import ipc


def main():
    # Create a server (port 0 picks a free port; the seed used 8080).
    server = ipc.server("127.0.0.1", 0)
    # Create a client and connect to the server.
    client = ipc.client("127.0.0.1", server.port)
    # Say hello.
    client.send("hi")
    # Listen for any client to say something.
    msg = server.recv_any(timeout=30)
    assert msg == "hi"
    # Tensors travel as raw buffers, any dtype and shape (non-contiguous too).
    client.send({"grads": torch.arange(12.0).reshape(3, 4).t(), "step": 7})
    got = server.recv_any(timeout=30)
    print(msg, got["step"], got["grads"].shape)
    # Disconnect and shut down.
    client.close()
    server.close()
    return msg, got


if __name__ == "__main__":
    main()
