// A WebSocket echo server in one file of plain JDK (no library): `java Server.java --port N [--leak]`.
//
// The JDK has no WebSocket server, so the RFC 6455 opening handshake (SHA-1 + Base64 of the key)
// and the framing (masked client frames, text/binary echo, ping -> pong, close -> close) are done
// by hand on a ServerSocket with one thread per connection. With --leak every connection leaves a
// ConnState (about 1.1 KB with its buffer) in a static map that is never pruned: the bug the soak
// must find, at the JVM's default heap settings.
import java.io.BufferedInputStream;
import java.io.EOFException;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.Socket;
import java.nio.charset.StandardCharsets;
import java.security.MessageDigest;
import java.util.Base64;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;

public class Server {
    static final String GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";
    static final Map<Long, ConnState> STATES = new ConcurrentHashMap<>();
    static final AtomicLong NEXT_ID = new AtomicLong();
    static boolean leak = false;

    /** What the server knows about one connection; the leak keeps it after the connection closed. */
    static final class ConnState {
        final long id;
        final String peer;
        final long openedAt;
        final byte[] scratch;

        ConnState(long id, String peer) {
            this.id = id;
            this.peer = peer;
            this.openedAt = System.nanoTime();
            this.scratch = new byte[1024];
        }
    }

    public static void main(String[] args) throws IOException {
        int port = 8765;
        for (int i = 0; i < args.length; i++) {
            if (args[i].equals("--port") && i + 1 < args.length) {
                port = Integer.parseInt(args[++i]);
            } else if (args[i].equals("--leak")) {
                leak = true;
            } else {
                System.err.println("usage: java Server.java --port N [--leak]");
                System.exit(2);
            }
        }
        try (ServerSocket listener = new ServerSocket(port, 1024, InetAddress.getByName("127.0.0.1"))) {
            System.out.println("listening on ws://127.0.0.1:" + port + "/" + (leak ? " (leaking)" : ""));
            System.out.flush();
            while (true) {
                Socket sock = listener.accept();
                Thread worker = new Thread(() -> serve(sock), "conn");
                worker.setDaemon(true);
                worker.start();
            }
        }
    }

    static void serve(Socket sock) {
        long id = NEXT_ID.incrementAndGet();
        try (sock) {
            sock.setTcpNoDelay(true);
            InputStream in = new BufferedInputStream(sock.getInputStream());
            OutputStream out = sock.getOutputStream();
            if (!handshake(in, out)) {
                return;
            }
            ConnState state = new ConnState(id, sock.getRemoteSocketAddress().toString());
            STATES.put(id, state);
            try {
                echo(in, out);
            } finally {
                if (!leak) {
                    STATES.remove(id);
                }
            }
        } catch (IOException e) {
            // the peer went away: nothing to do
        }
    }

    static boolean handshake(InputStream in, OutputStream out) throws IOException {
        String key = null;
        String line = readLine(in);
        if (line == null || !line.startsWith("GET ")) {
            return false;
        }
        while ((line = readLine(in)) != null && !line.isEmpty()) {
            int colon = line.indexOf(':');
            if (colon > 0 && line.substring(0, colon).trim().equalsIgnoreCase("Sec-WebSocket-Key")) {
                key = line.substring(colon + 1).trim();
            }
        }
        if (key == null) {
            out.write("HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    .getBytes(StandardCharsets.US_ASCII));
            return false;
        }
        String accept;
        try {
            MessageDigest sha1 = MessageDigest.getInstance("SHA-1");
            accept = Base64.getEncoder().encodeToString(sha1.digest((key + GUID).getBytes(StandardCharsets.US_ASCII)));
        } catch (java.security.NoSuchAlgorithmException e) {
            throw new IOException(e);
        }
        out.write(("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                + "Sec-WebSocket-Accept: " + accept + "\r\n\r\n").getBytes(StandardCharsets.US_ASCII));
        out.flush();
        return true;
    }

    /** One CRLF-terminated header line (ASCII), or null at end of stream. */
    static String readLine(InputStream in) throws IOException {
        StringBuilder sb = new StringBuilder();
        int c;
        while ((c = in.read()) != -1) {
            if (c == '\n') {
                int n = sb.length();
                return n > 0 && sb.charAt(n - 1) == '\r' ? sb.substring(0, n - 1) : sb.toString();
            }
            if (sb.length() > 8192) {
                throw new IOException("header line too long");
            }
            sb.append((char) c);
        }
        return null;
    }

    /** Echo data frames until the peer closes; answers pings, replies to close with close. */
    static void echo(InputStream in, OutputStream out) throws IOException {
        while (true) {
            int b0 = readByte(in);
            int b1 = readByte(in);
            int opcode = b0 & 0x0F;
            boolean masked = (b1 & 0x80) != 0;
            long len = b1 & 0x7F;
            if (len == 126) {
                len = (readByte(in) << 8) | readByte(in);
            } else if (len == 127) {
                len = 0;
                for (int i = 0; i < 8; i++) {
                    len = (len << 8) | readByte(in);
                }
            }
            if (len > (1 << 20)) {
                sendFrame(out, 0x8, new byte[] {0x03, (byte) 0xF1}); // 1009: message too big
                return;
            }
            byte[] mask = new byte[4];
            if (masked) {
                readFully(in, mask);
            }
            byte[] payload = new byte[(int) len];
            readFully(in, payload);
            if (masked) {
                for (int i = 0; i < payload.length; i++) {
                    payload[i] ^= mask[i & 3];
                }
            }
            switch (opcode) {
                case 0x0, 0x1, 0x2 -> sendFrame(out, b0 & 0x8F, payload); // FIN bit and opcode as received
                case 0x8 -> {
                    sendFrame(out, 0x88, payload.length >= 2 ? new byte[] {payload[0], payload[1]} : new byte[0]);
                    return;
                }
                case 0x9 -> sendFrame(out, 0x8A, payload);
                default -> { } // pong or reserved: ignore
            }
        }
    }

    static void sendFrame(OutputStream out, int first, byte[] payload) throws IOException {
        int n = payload.length;
        byte[] header;
        if (n < 126) {
            header = new byte[] {(byte) first, (byte) n};
        } else if (n < 65536) {
            header = new byte[] {(byte) first, 126, (byte) (n >> 8), (byte) n};
        } else {
            header = new byte[10];
            header[0] = (byte) first;
            header[1] = 127;
            for (int i = 0; i < 8; i++) {
                header[9 - i] = (byte) ((long) n >> (8 * i));
            }
        }
        out.write(header);
        out.write(payload);
        out.flush();
    }

    static int readByte(InputStream in) throws IOException {
        int b = in.read();
        if (b == -1) {
            throw new EOFException();
        }
        return b;
    }

    static void readFully(InputStream in, byte[] buf) throws IOException {
        int off = 0;
        while (off < buf.length) {
            int n = in.read(buf, off, buf.length - off);
            if (n == -1) {
                throw new EOFException();
            }
            off += n;
        }
    }
}
