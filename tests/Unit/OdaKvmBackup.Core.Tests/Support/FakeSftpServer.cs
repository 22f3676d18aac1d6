using System.Buffers.Binary;
using System.IO.Pipes;
using System.Text;

namespace OdaKvmBackup.Core.Tests.Support;

/// <summary>One request a <see cref="FakeSftpServer"/> session received: its number in the session (0 is the first
/// after INIT), its type, for EXTENDED the extension's name, for WRITE the bytes it carries, for OPEN its flags.</summary>
internal sealed record FakeSftpRequest(int Session, int Index, SftpPacketType Type, string? Extension, int DataLength, SftpOpenFlags OpenFlags = 0);

/// <summary>
/// An SFTP server in the test process, reached through real OS pipes as ssh's stdin and stdout are: for what a real
/// sshd cannot be made to do on cue, a server that announces absurd limits, or one whose SFTP service stops
/// (neither reads nor answers any more, as an sftp-server blocked on a hung NFS mount) while the connection stays.
/// Each start of "ssh" is a new session; disposing one is killing that ssh. It answers INIT, limits@openssh.com,
/// OPEN, CLOSE, READ (zeros up to <see cref="FileSize"/>), WRITE, FSETSTAT, SETSTAT, STAT, LSTAT, FSTAT (a 0700
/// folder, or a 0600 file of <see cref="FileSize"/> bytes for a handle) and fsync@openssh.com; anything else gets
/// "unsupported".
/// </summary>
internal sealed class FakeSftpServer : IDuplexProcessRunner
{
    private readonly List<Session> _sessions = new();

    /// <summary>What limits@openssh.com says (read, write); null: the server lacks the extension.</summary>
    public (ulong Read, ulong Write)? Limits { get; init; } = (256 * 1024 - 1024, 256 * 1024 - 1024);

    /// <summary>True for the request from which a session's SFTP service stops: it neither reads nor answers again.</summary>
    public Func<FakeSftpRequest, bool> StopsAt { get; init; } = _ => false;

    /// <summary>True for a request the session reads but never answers (it goes on with the others).</summary>
    public Func<FakeSftpRequest, bool> Ignores { get; init; } = _ => false;

    /// <summary>The size of every file opened (READ returns zeros up to it).</summary>
    public long FileSize { get; init; }

    /// <summary>When true, a session's service is stopped from the start: not even INIT gets an answer.</summary>
    public Func<int, bool> StoppedFromTheStart { get; init; } = _ => false;

    /// <summary>How long the reply to a request takes (a slow but working server).</summary>
    public Func<FakeSftpRequest, TimeSpan> ReplyDelay { get; init; } = _ => TimeSpan.Zero;

    public int SessionCount
    {
        get
        {
            lock (_sessions)
                return _sessions.Count;
        }
    }

    /// <summary>How many sessions were ended by their client (ssh killed).</summary>
    public int KilledCount
    {
        get
        {
            lock (_sessions)
                return _sessions.Count(s => s.Killed);
        }
    }

    /// <summary>Every request received, in order, over all sessions.</summary>
    public List<FakeSftpRequest> Requests { get; } = new();

    /// <summary>An SshClient whose ssh is this server.</summary>
    public SshClient Client(string host = "fake") =>
        new(new SshDestination("root", host, "/backup"), new FakeRunner(_ => throw new InvalidOperationException("only the SFTP session runs here")), this);

    public Task<IDuplexProcess> StartDuplexAsync(string program, IReadOnlyList<string> arguments, CancellationToken ct)
    {
        Session session;
        lock (_sessions)
        {
            session = new Session(this, _sessions.Count);
            _sessions.Add(session);
        }
        session.Start();
        return Task.FromResult<IDuplexProcess>(session);
    }

    private sealed class Session : IDuplexProcess
    {
        private readonly FakeSftpServer _server;
        private readonly int _number;
        private readonly AnonymousPipeServerStream _clientInput = new(PipeDirection.Out);
        private readonly AnonymousPipeClientStream _serverReads;
        private readonly AnonymousPipeServerStream _clientOutput = new(PipeDirection.In);
        private readonly AnonymousPipeClientStream _serverWrites;
        private readonly TaskCompletionSource<int> _exited = new(TaskCreationOptions.RunContinuationsAsynchronously);
        private readonly ManualResetEventSlim _killed = new();

        public Session(FakeSftpServer server, int number)
        {
            _server = server;
            _number = number;
            _serverReads = new AnonymousPipeClientStream(PipeDirection.In, _clientInput.ClientSafePipeHandle);
            _serverWrites = new AnonymousPipeClientStream(PipeDirection.Out, _clientOutput.ClientSafePipeHandle);
        }

        public bool Killed { get; private set; }
        public Stream Input => _clientInput;
        public Stream Output => _clientOutput;
        public string StandardError => "";

        public void Start() => new Thread(Serve) { IsBackground = true, Name = $"fake sftp-server {_number}" }.Start();

        public Task<int> WaitForExitAsync(CancellationToken ct)
        {
            _clientInput.Dispose();
            return _exited.Task.WaitAsync(ct);
        }

        public ValueTask DisposeAsync()
        {
            if (!_exited.Task.IsCompleted)
                Killed = true;
            _killed.Set();
            // As when ssh dies: both pipes close, so a client blocked writing to a full one gets EPIPE and its reader EOF.
            _clientInput.Dispose();
            _serverReads.Dispose();
            _serverWrites.Dispose();
            _exited.TrySetResult(255);
            return ValueTask.CompletedTask;
        }

        private void Serve()
        {
            try
            {
                if (_server.StoppedFromTheStart(_number))
                {
                    _killed.Wait(); // a service that never answers; the pipes stay open until ssh is killed
                    return;
                }
                var index = 0;
                while (Read() is { } packet)
                {
                    var type = (SftpPacketType)packet[0];
                    if (type == SftpPacketType.Init)
                    {
                        Reply(Version());
                        continue;
                    }
                    var id = BinaryPrimitives.ReadUInt32BigEndian(packet.AsSpan(1));
                    var extension = type == SftpPacketType.Extended ? ReadString(packet, 5) : null;
                    var request = new FakeSftpRequest(_number, index++, type, extension, type == SftpPacketType.Write ? WriteLength(packet) : 0,
                        type == SftpPacketType.Open ? OpenFlagsOf(packet) : 0);
                    lock (_server.Requests)
                        _server.Requests.Add(request);
                    if (_server.StopsAt(request))
                    {
                        _killed.Wait(); // stopped: reads nothing more, answers nothing more
                        return;
                    }
                    if (_server.Ignores(request))
                        continue;
                    if (_server.ReplyDelay(request) is var delay && delay > TimeSpan.Zero)
                        Thread.Sleep(delay);
                    Reply(Answer(type, id, extension, packet));
                }
            }
            catch (Exception ex) when (ex is IOException or ObjectDisposedException)
            {
                // The client went away.
            }
            finally
            {
                // As sftp-server exits: its stdout closes, so the client reads the end of the stream.
                _serverWrites.Dispose();
                _exited.TrySetResult(Killed ? 255 : 0);
            }
        }

        private byte[] Version()
        {
            var reply = new Writer(SftpPacketType.Version);
            reply.UInt32(3);
            if (_server.Limits is not null)
                reply.String("limits@openssh.com").String("1");
            reply.String("fsync@openssh.com").String("1").String("posix-rename@openssh.com").String("1").String("statvfs@openssh.com").String("2");
            return reply.Finish();
        }

        private byte[] Answer(SftpPacketType type, uint id, string? extension, byte[] packet) => type switch
        {
            SftpPacketType.Read => ReadReply(id, packet),
            SftpPacketType.Extended when extension == "limits@openssh.com" =>
                new Writer(SftpPacketType.ExtendedReply, id).UInt64(256 * 1024).UInt64(_server.Limits!.Value.Read).UInt64(_server.Limits.Value.Write).UInt64(0).Finish(),
            SftpPacketType.Extended when extension == "fsync@openssh.com" => Status(id, 0),
            SftpPacketType.Open => new Writer(SftpPacketType.Handle, id).String("h").Finish(),
            SftpPacketType.Close or SftpPacketType.Write or SftpPacketType.FSetStat or SftpPacketType.SetStat => Status(id, 0),
            SftpPacketType.FStat => new Writer(SftpPacketType.Attrs, id).UInt32(0x1 | 0x4).UInt64((ulong)_server.FileSize).UInt32(0x8180).Finish(),
            // A path whose last name is "disk" is the one file this server holds; any other path is a folder.
            SftpPacketType.Stat or SftpPacketType.LStat when PathOf(packet).EndsWith("/disk", StringComparison.Ordinal) =>
                new Writer(SftpPacketType.Attrs, id).UInt32(0x1 | 0x4).UInt64((ulong)_server.FileSize).UInt32(0x8180).Finish(),
            SftpPacketType.Stat or SftpPacketType.LStat => new Writer(SftpPacketType.Attrs, id).UInt32(0x1 | 0x4).UInt64(4096).UInt32(0x41C0).Finish(),
            _ => Status(id, 8),
        };

        /// <summary>READ: type, id, handle, uint64 offset, uint32 length; zeros up to the file's size, then EOF.</summary>
        /// <summary>STAT, LSTAT: type, id, string path.</summary>
        private static string PathOf(byte[] packet) =>
            System.Text.Encoding.UTF8.GetString(packet, 9, (int)BinaryPrimitives.ReadUInt32BigEndian(packet.AsSpan(5)));

        private byte[] ReadReply(uint id, byte[] packet)
        {
            var handleLength = (int)BinaryPrimitives.ReadUInt32BigEndian(packet.AsSpan(5));
            var offset = (long)BinaryPrimitives.ReadUInt64BigEndian(packet.AsSpan(9 + handleLength));
            var length = (int)BinaryPrimitives.ReadUInt32BigEndian(packet.AsSpan(17 + handleLength));
            var count = (int)Math.Max(0, Math.Min(length, _server.FileSize - offset));
            if (count == 0)
                return Status(id, 1);
            var reply = new Writer(SftpPacketType.Data, id).UInt32((uint)count);
            return reply.Zeros(count).Finish();
        }

        /// <summary>OPEN: type, id, string path, uint32 flags, attributes.</summary>
        private static SftpOpenFlags OpenFlagsOf(byte[] packet) =>
            (SftpOpenFlags)BinaryPrimitives.ReadUInt32BigEndian(packet.AsSpan(9 + (int)BinaryPrimitives.ReadUInt32BigEndian(packet.AsSpan(5))));

        /// <summary>WRITE: type, id, handle, uint64 offset, uint32 length, data.</summary>
        private static int WriteLength(byte[] packet)
        {
            var handleLength = (int)BinaryPrimitives.ReadUInt32BigEndian(packet.AsSpan(5));
            return (int)BinaryPrimitives.ReadUInt32BigEndian(packet.AsSpan(17 + handleLength));
        }

        private static byte[] Status(uint id, uint code) => new Writer(SftpPacketType.Status, id).UInt32(code).String("").String("").Finish();

        private byte[]? Read()
        {
            var length = new byte[4];
            if (_serverReads.ReadAtLeast(length, 4, throwOnEndOfStream: false) < 4)
                return null;
            var packet = new byte[BinaryPrimitives.ReadUInt32BigEndian(length)];
            return _serverReads.ReadAtLeast(packet, packet.Length, throwOnEndOfStream: false) < packet.Length ? null : packet;
        }

        private void Reply(byte[] packet)
        {
            _serverWrites.Write(packet);
            _serverWrites.Flush();
        }

        private static string ReadString(byte[] packet, int offset)
        {
            var length = (int)BinaryPrimitives.ReadUInt32BigEndian(packet.AsSpan(offset));
            return Encoding.UTF8.GetString(packet, offset + 4, length);
        }
    }

    private sealed class Writer
    {
        private readonly List<byte> _bytes = [0, 0, 0, 0];

        public Writer(SftpPacketType type, uint? id = null)
        {
            _bytes.Add((byte)type);
            if (id is { } requestId)
                UInt32(requestId);
        }

        public Writer UInt32(uint value)
        {
            var bytes = new byte[4];
            BinaryPrimitives.WriteUInt32BigEndian(bytes, value);
            _bytes.AddRange(bytes);
            return this;
        }

        public Writer UInt64(ulong value)
        {
            var bytes = new byte[8];
            BinaryPrimitives.WriteUInt64BigEndian(bytes, value);
            _bytes.AddRange(bytes);
            return this;
        }

        public Writer String(string value)
        {
            var bytes = Encoding.UTF8.GetBytes(value);
            UInt32((uint)bytes.Length);
            _bytes.AddRange(bytes);
            return this;
        }

        public Writer Zeros(int count)
        {
            _bytes.AddRange(new byte[count]);
            return this;
        }

        public byte[] Finish()
        {
            var packet = _bytes.ToArray();
            BinaryPrimitives.WriteUInt32BigEndian(packet, (uint)(packet.Length - 4));
            return packet;
        }
    }
}
