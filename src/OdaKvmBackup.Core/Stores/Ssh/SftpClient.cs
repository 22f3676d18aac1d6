using System.Buffers;
using System.Buffers.Binary;
using System.Collections.Concurrent;

namespace OdaKvmBackup.Core.Stores.Ssh;

/// <summary>An open file or folder on the server.</summary>
internal sealed record SftpHandle(byte[] Value, string Path);

/// <summary>
/// An SFTP version 3 client over <c>ssh -s host sftp</c>: the server needs nothing but sshd with its sftp subsystem.
/// Requests are pipelined: any number may be in flight, each completes when its reply arrives, so a caller keeps many
/// WRITEs or READs outstanding to run at the speed of the link rather than of its round trips. Safe for concurrent use.
/// Failures are <see cref="BackupException"/>s: SFTP status codes become PathNotFound, PathNotWritable,
/// PathNotReadable, DestinationFull or SftpFailed; a broken session becomes the classified SSH error. Nothing is
/// waited on for ever: requests that the server leaves unanswered for <see cref="SftpLimits.RequestTimeout"/> end
/// the session as a lost connection (SshConnectionLost), and the sizes it announces are clamped.
/// </summary>
internal sealed class SftpClient : IAsyncDisposable
{
    /// <summary>What every SFTP server accepts (the draft's minimum); used when the server does not say.</summary>
    public const int DefaultChunkLength = 32 * 1024;

    // Far above any reply OpenSSH sends (256 KiB); a longer length means the stream is not SFTP.
    private const int MaxReplyLength = 4 * 1024 * 1024;
    private const int SftpVersion = 3;

    private readonly IDuplexProcess _process;
    private readonly Stream _input;
    private readonly Stream _output;
    private readonly ConcurrentDictionary<uint, IPendingReply> _pending = new();
    private readonly BlockingCollection<OutgoingPacket> _outgoing = new();
    private readonly TaskCompletionSource _versionReceived = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _senderDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly TaskCompletionSource _receiverDone = new(TaskCreationOptions.RunContinuationsAsynchronously);
    private readonly byte[] _lengthBytes = new byte[4];
    private readonly TimeSpan _requestTimeout = SftpLimits.RequestTimeout;
    private volatile BackupException? _failure;
    private Timer? _watchdog;
    // Environment.TickCount64 of the server's last packet, and of the start of the packet the sender is writing (0: none).
    private long _lastAnswer = Environment.TickCount64;
    private long _sendingSince;
    private uint _lastRequestId;
    private bool _disposed;

    private SftpClient(IDuplexProcess process, string target)
    {
        _process = process;
        _input = process.Input;
        _output = new BufferedStream(process.Output, 64 * 1024);
        Target = target;
    }

    /// <summary>The server as messages name it ("root@server").</summary>
    public string Target { get; }

    /// <summary>The extensions the server announced, by name, with their data (usually a version "1").</summary>
    public IReadOnlyDictionary<string, string> Extensions { get; private set; } = new Dictionary<string, string>();

    /// <summary>Bytes per WRITE: limits@openssh.com's max-write-length clamped to 32-256 KiB
    /// (<see cref="SftpLimits.ClampChunkLength"/>), else <see cref="DefaultChunkLength"/>.</summary>
    public int MaxWriteLength { get; private set; } = DefaultChunkLength;

    /// <summary>Bytes per READ: limits@openssh.com's max-read-length clamped to 32-256 KiB, else <see cref="DefaultChunkLength"/>.</summary>
    public int MaxReadLength { get; private set; } = DefaultChunkLength;

    /// <summary>Null while the session works; the error that ended it otherwise.</summary>
    public BackupException? Failure => _failure;

    /// <summary>Starts <c>ssh -s host sftp</c> and negotiates version 3 and the server's limits. Throws the classified
    /// SSH error when the connection fails (unknown or changed host key, authentication, unreachable host).</summary>
    public static async Task<SftpClient> ConnectAsync(SshClient ssh, CancellationToken ct)
    {
        var process = await ssh.StartSubsystemAsync("sftp", ct).ConfigureAwait(false);
        var client = new SftpClient(process, ssh.Target);
        try
        {
            await client.InitializeAsync(ct).ConfigureAwait(false);
            return client;
        }
        catch
        {
            await client.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    private async Task InitializeAsync(CancellationToken ct)
    {
        // The pipes are read and written with blocking calls on two threads of their own: asynchronous I/O on an
        // anonymous pipe costs .NET five times the CPU (measured: 1.9 s against 0.35 s per GiB), which on a small
        // server is the difference between keeping up with ssh and not.
        // INIT is queued before the threads start: a session that ends at once (ssh refused the host) must not
        // have closed the queue already.
        var init = new SftpPacketWriter(SftpPacketType.Init);
        init.WriteUInt32(SftpVersion);
        _outgoing.Add(new OutgoingPacket(init.Finish(), default), CancellationToken.None);
        new Thread(SendLoop) { IsBackground = true, Name = "sftp send " + Target }.Start();
        new Thread(ReceiveLoop) { IsBackground = true, Name = "sftp receive " + Target }.Start();
        var period = TimeSpan.FromMilliseconds(Math.Clamp(_requestTimeout.TotalMilliseconds / 4, 50, 1000));
        _watchdog = new Timer(_ => Watch(), null, period, period);
        await _versionReceived.Task.WaitAsync(ct).ConfigureAwait(false);
        if (Extensions.ContainsKey("limits@openssh.com"))
        {
            var (maxRead, maxWrite) = await SendAsync(Extended("limits@openssh.com"), reply =>
            {
                var body = ExpectExtendedReply(reply, "read the server's limits", "");
                body.ReadUInt64(); // max-packet-length
                return (body.ReadUInt64(), body.ReadUInt64());
            }, ct).ConfigureAwait(false);
            // Taken as a server says them, 2 GiB per request would be 128 GiB of buffers for a writer's window.
            MaxReadLength = SftpLimits.ClampChunkLength(maxRead);
            MaxWriteLength = SftpLimits.ClampChunkLength(maxWrite);
        }
    }

    private void ReadVersion(SftpResponse version)
    {
        if (version.Type != SftpPacketType.Version)
            throw new InvalidDataException($"the server answered INIT with packet type {(byte)version.Type}");
        // VERSION has no request id: its fields start right after the type byte.
        var reader = new SftpPacketReader(version.AfterType());
        var serverVersion = reader.ReadUInt32();
        if (serverVersion < SftpVersion)
            throw new InvalidDataException($"the server speaks SFTP version {serverVersion}, version 3 is needed");
        var extensions = new Dictionary<string, string>(StringComparer.Ordinal);
        while (reader.Remaining > 0)
            extensions[reader.ReadString()] = reader.ReadString();
        Extensions = extensions;
    }

    // ------------------------------------------------------------------ files

    /// <summary>Opens a file. <paramref name="mode"/> applies to a file it creates (then the server's umask may
    /// still take bits away: set the mode again with <see cref="SetStatAsync(SftpHandle, SftpAttributes, CancellationToken)"/>
    /// when it matters).</summary>
    public Task<SftpHandle> OpenAsync(string path, SftpOpenFlags flags, UnixFileMode? mode, CancellationToken ct)
    {
        var packet = Request(SftpPacketType.Open);
        packet.WriteString(path);
        packet.WriteUInt32((uint)flags);
        packet.WriteAttributes(mode is null ? new SftpAttributes() : SftpAttributes.WithMode(mode.Value));
        var modifies = (flags & (SftpOpenFlags.Write | SftpOpenFlags.Create | SftpOpenFlags.Truncate)) != 0;
        return SendAsync(packet, reply => new SftpHandle(ExpectHandle(reply, modifies ? "open for writing" : "open", path, modifies), path), ct);
    }

    public Task CloseAsync(SftpHandle handle, CancellationToken ct) =>
        SendAsync(WithHandle(SftpPacketType.Close, handle), reply => ExpectOk(reply, "close", handle.Path, modifies: false), ct);

    /// <summary>Reads up to <paramref name="buffer"/>.Length bytes (at most <see cref="MaxReadLength"/>) at
    /// <paramref name="offset"/>; 0 at the end of the file. The buffer is filled when the reply arrives: leave it
    /// alone until the task completes.</summary>
    public Task<int> ReadAsync(SftpHandle handle, long offset, Memory<byte> buffer, CancellationToken ct)
    {
        var packet = WithHandle(SftpPacketType.Read, handle);
        packet.WriteUInt64((ulong)offset);
        packet.WriteUInt32((uint)Math.Min(buffer.Length, MaxReadLength));
        return SendAsync(packet, reply =>
        {
            if (reply.Type == SftpPacketType.Status && StatusOf(reply).Code == SftpStatusCode.Eof)
                return 0;
            if (reply.Type != SftpPacketType.Data)
                throw Unexpected(reply, "read", handle.Path, modifies: false);
            var data = reply.Body().ReadBytes();
            if (data.Length > buffer.Length)
                throw Protocol($"READ returned {data.Length} bytes for {buffer.Length} asked");
            data.CopyTo(buffer.Span);
            return data.Length;
        }, ct);
    }

    /// <summary>Writes <paramref name="data"/> (at most <see cref="MaxWriteLength"/> bytes) at <paramref name="offset"/>.
    /// The data is sent from the caller's memory: it must not change until the returned task completes, which is when
    /// the server has acknowledged the write.</summary>
    public Task WriteAsync(SftpHandle handle, long offset, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        if (data.Length > MaxWriteLength)
            throw new ArgumentOutOfRangeException(nameof(data), $"At most {MaxWriteLength} bytes per WRITE.");
        var packet = WithHandle(SftpPacketType.Write, handle);
        packet.WriteUInt64((ulong)offset);
        packet.WriteUInt32((uint)data.Length);
        return SendAsync(packet, reply => ExpectOk(reply, "write to", handle.Path, modifies: true), ct, data);
    }

    /// <summary>Flushes the file to stable storage on the server (fsync@openssh.com).</summary>
    public Task FsyncAsync(SftpHandle handle, CancellationToken ct)
    {
        var packet = Extended("fsync@openssh.com");
        packet.WriteBytes(handle.Value);
        return SendAsync(packet, reply => ExpectOk(reply, "flush (fsync)", handle.Path, modifies: true), ct, timeoutFactor: SftpLimits.FlushTimeoutFactor);
    }

    public Task<SftpAttributes> StatAsync(SftpHandle handle, CancellationToken ct) =>
        SendAsync(WithHandle(SftpPacketType.FStat, handle), reply => ExpectAttributes(reply, "read the attributes of", handle.Path), ct);

    /// <summary>Sets the attributes given (permissions, size: a size truncates or extends the file with a hole).</summary>
    public Task SetStatAsync(SftpHandle handle, SftpAttributes attributes, CancellationToken ct)
    {
        var packet = WithHandle(SftpPacketType.FSetStat, handle);
        packet.WriteAttributes(attributes);
        return SendAsync(packet, reply => ExpectOk(reply, "set the attributes of", handle.Path, modifies: true), ct);
    }

    // ------------------------------------------------------------------ paths

    /// <summary>The absolute form of <paramref name="path"/> on the server ("." is the login's home folder).</summary>
    public Task<string> RealPathAsync(string path, CancellationToken ct) =>
        SendAsync(WithPath(SftpPacketType.RealPath, path), reply =>
        {
            if (reply.Type != SftpPacketType.Name)
                throw Unexpected(reply, "resolve", path, modifies: false);
            var body = reply.Body();
            return body.ReadUInt32() >= 1 ? body.ReadString() : throw Protocol("REALPATH returned no name");
        }, ct);

    /// <summary>The attributes of what <paramref name="path"/> names, following symbolic links; null when nothing is there.</summary>
    public Task<SftpAttributes?> StatAsync(string path, CancellationToken ct) => StatPathAsync(SftpPacketType.Stat, path, ct);

    /// <summary>Like <see cref="StatAsync(string, CancellationToken)"/>, but a symbolic link is described itself.</summary>
    public Task<SftpAttributes?> LStatAsync(string path, CancellationToken ct) => StatPathAsync(SftpPacketType.LStat, path, ct);

    public Task SetStatAsync(string path, SftpAttributes attributes, CancellationToken ct)
    {
        var packet = WithPath(SftpPacketType.SetStat, path);
        packet.WriteAttributes(attributes);
        return SendAsync(packet, reply => ExpectOk(reply, "set the attributes of", path, modifies: true), ct);
    }

    /// <summary>Creates a folder with <paramref name="mode"/> (less the server's umask). An existing name fails
    /// with SSH_FX_FAILURE in version 3: callers that accept an existing folder check with Stat.</summary>
    public Task MakeDirectoryAsync(string path, UnixFileMode mode, CancellationToken ct)
    {
        var packet = WithPath(SftpPacketType.MkDir, path);
        packet.WriteAttributes(SftpAttributes.WithMode(mode));
        return SendAsync(packet, reply => ExpectOk(reply, "create the folder", path, modifies: true), ct);
    }

    public Task RemoveDirectoryAsync(string path, CancellationToken ct) =>
        SendAsync(WithPath(SftpPacketType.RmDir, path), reply => ExpectOk(reply, "delete the folder", path, modifies: true), ct);

    public Task RemoveAsync(string path, CancellationToken ct) =>
        SendAsync(WithPath(SftpPacketType.Remove, path), reply => ExpectOk(reply, "delete", path, modifies: true), ct);

    /// <summary>The entries of a folder, without "." and "..". Attributes are the entries' own (not followed).</summary>
    public async Task<IReadOnlyList<SftpDirectoryEntry>> ListDirectoryAsync(string path, CancellationToken ct)
    {
        var handle = await SendAsync(WithPath(SftpPacketType.OpenDir, path),
            reply => new SftpHandle(ExpectHandle(reply, "list", path, modifies: false), path), ct).ConfigureAwait(false);
        var entries = new List<SftpDirectoryEntry>();
        try
        {
            // READDIR returns a batch of entries per call, then EOF.
            while (await SendAsync(WithHandle(SftpPacketType.ReadDir, handle), reply => ReadDirectoryBatch(reply, path, entries), ct).ConfigureAwait(false))
            {
            }
            return entries;
        }
        finally
        {
            if (_failure is null)
                await CloseAsync(handle, CancellationToken.None).ConfigureAwait(false);
        }
    }

    /// <summary>Renames, replacing what is at <paramref name="to"/> atomically (posix-rename@openssh.com, rename(2)).</summary>
    public Task PosixRenameAsync(string from, string to, CancellationToken ct)
    {
        var packet = Extended("posix-rename@openssh.com");
        packet.WriteString(from);
        packet.WriteString(to);
        return SendAsync(packet, reply => ExpectOk(reply, $"rename to '{to}'", from, modifies: true), ct);
    }

    /// <summary>The file system that holds <paramref name="path"/> (statvfs@openssh.com).</summary>
    public Task<SftpFileSystemInfo> StatVfsAsync(string path, CancellationToken ct)
    {
        var packet = Extended("statvfs@openssh.com");
        packet.WriteString(path);
        return SendAsync(packet, reply =>
        {
            var body = ExpectExtendedReply(reply, "read the free space of", path);
            return new SftpFileSystemInfo(BlockSize: body.ReadUInt64(), FragmentSize: body.ReadUInt64(), Blocks: body.ReadUInt64(),
                FreeBlocks: body.ReadUInt64(), AvailableBlocks: body.ReadUInt64());
        }, ct);
    }

    // ------------------------------------------------------------------ session

    /// <summary>Ends the session: closes ssh's stdin so the server ends the subsystem and ssh exits; kills ssh if it
    /// does not within a few seconds. Requests still in flight fail.</summary>
    public async ValueTask DisposeAsync()
    {
        if (_disposed)
            return;
        _disposed = true;
        _watchdog?.Dispose();
        // The sender sends what is queued, then closes ssh's stdin; the server ends the subsystem and ssh exits.
        _outgoing.CompleteAdding();
        var ended = Task.WhenAll(_senderDone.Task, _receiverDone.Task);
        await Task.WhenAny(ended, Task.Delay(TimeSpan.FromSeconds(5))).ConfigureAwait(false);
        // A hung ssh is killed, which also ends a sender blocked on a full pipe.
        await _process.DisposeAsync().ConfigureAwait(false);
        await ended.ConfigureAwait(false);
        _outgoing.Dispose();
    }

    private SftpPacketWriter Request(SftpPacketType type) => new(type, Interlocked.Increment(ref _lastRequestId));

    private SftpPacketWriter WithPath(SftpPacketType type, string path)
    {
        var packet = Request(type);
        packet.WriteString(path);
        return packet;
    }

    private SftpPacketWriter WithHandle(SftpPacketType type, SftpHandle handle)
    {
        var packet = Request(type);
        packet.WriteBytes(handle.Value);
        return packet;
    }

    private SftpPacketWriter Extended(string name)
    {
        if (!Extensions.ContainsKey(name))
        {
            throw new BackupException(ErrorIds.SftpFailed, BackupErrorCategory.NotInstalled,
                $"The SFTP server of '{Target}' lacks the {name} extension, which the backup needs.",
                "Use an OpenSSH server (5.x or newer has it) for the destination.", Target);
        }
        var packet = Request(SftpPacketType.Extended);
        packet.WriteString(name);
        return packet;
    }

    private Task SendAsync(SftpPacketWriter packet, Action<SftpResponse> check, CancellationToken ct, ReadOnlyMemory<byte> data = default,
        int timeoutFactor = 1) =>
        SendAsync(packet, reply =>
        {
            check(reply);
            return true;
        }, ct, data, timeoutFactor);

    /// <summary>
    /// Queues a request (its header, then <paramref name="data"/> if any) for the sender thread. The reply is read
    /// by <paramref name="read"/> on the receiver thread as soon as it arrives, so a reply whose result nobody awaits
    /// yet (a WRITE among many in flight) costs no hop to another thread. The request may wait for its reply
    /// <paramref name="timeoutFactor"/> times the request limit (see <see cref="Watch"/>).
    /// </summary>
    private Task<T> SendAsync<T>(SftpPacketWriter packet, Func<SftpResponse, T> read, CancellationToken ct, ReadOnlyMemory<byte> data = default,
        int timeoutFactor = 1)
    {
        if (_disposed)
            return Task.FromException<T>(new ObjectDisposedException(nameof(SftpClient)));
        var id = packet.RequestId;
        var reply = new PendingReply<T>(packet.Type, timeoutFactor, response =>
        {
            try
            {
                return read(response);
            }
            catch (InvalidDataException ex)
            {
                throw Protocol(ex.Message);
            }
        });
        _pending[id] = reply;
        // Registered first, then checked: a session that ends from now on fails this request with the others.
        if (_failure is { } failure)
        {
            _pending.TryRemove(id, out _);
            return Task.FromException<T>(failure);
        }
        try
        {
            _outgoing.Add(new OutgoingPacket(packet.FinishHeader(data.Length), data, reply), CancellationToken.None);
        }
        catch (Exception ex) when (ex is InvalidOperationException or ObjectDisposedException)
        {
            // The session ended between the check and now.
            _pending.TryRemove(id, out _);
            return Task.FromException<T>(_failure ?? (Exception)new ObjectDisposedException(nameof(SftpClient)));
        }
        return ct.CanBeCanceled ? reply.Task.WaitAsync(ct) : reply.Task;
    }

    private void SendLoop()
    {
        try
        {
            // A packet is written whole or the session is over: a half packet would garble the stream.
            foreach (var packet in _outgoing.GetConsumingEnumerable())
            {
                Volatile.Write(ref _sendingSince, Environment.TickCount64);
                _input.Write(packet.Header.Span);
                if (!packet.Data.IsEmpty)
                    _input.Write(packet.Data.Span);
                Volatile.Write(ref _sendingSince, 0);
                packet.Reply?.Sent(Environment.TickCount64);
            }
            _input.Dispose();
        }
        catch (Exception ex) when (ex is IOException or ObjectDisposedException)
        {
            // ssh is gone; the receiver reports why and fails every request.
        }
        finally
        {
            _senderDone.TrySetResult();
        }
    }

    private void ReceiveLoop()
    {
        BackupException failure;
        try
        {
            using (var version = ReadPacket())
            {
                if (version is null)
                    throw _failure ?? Ended(established: false);
                ReadVersion(version);
            }
            _versionReceived.TrySetResult();
            while (ReadPacket() is { } response)
            {
                using (response)
                {
                    var id = response.Length >= 5 ? BinaryPrimitives.ReadUInt32BigEndian(response.AfterType()) : 0;
                    if (_pending.TryRemove(id, out var reply))
                        reply.Complete(response);
                }
            }
            // Ended by the watchdog (ssh stopped): its reason is the one to give, not what ssh said as it died.
            failure = _failure ?? Ended(established: true);
        }
        catch (BackupException ex)
        {
            failure = ex;
        }
        catch (InvalidDataException ex)
        {
            failure = Protocol(ex.Message);
        }
        catch (Exception ex)
        {
            failure = SshErrors.ConnectionLost(Target, ex.Message, ex);
        }
        failure = Interlocked.CompareExchange(ref _failure, failure, null) ?? failure;
        _watchdog?.Dispose();
        _versionReceived.TrySetException(failure);
        foreach (var id in _pending.Keys)
        {
            if (_pending.TryRemove(id, out var reply))
                reply.Fail(failure);
        }
        // Nothing more will be sent: a sender waiting for packets stops.
        if (!_disposed)
            _outgoing.CompleteAdding();
        _receiverDone.TrySetResult();
    }

    /// <summary>
    /// The request deadline, checked a few times per limit: a request sent (or, at the start, the session itself)
    /// that has waited the limit while the server answered nothing at all, or a packet that the server has not
    /// taken for the limit (ssh's pipe stays full), ends the session as a lost connection. Counting from the
    /// server's last answer, a slow link whose answers keep coming never trips it, however many requests wait.
    /// While a flush (fsync) is in flight every request may wait as long as it may: OpenSSH's server answers in
    /// order, so those sent after it wait for it.
    /// </summary>
    private void Watch()
    {
        if (_failure is not null)
            return;
        var now = Environment.TickCount64;
        var quietSince = Volatile.Read(ref _lastAnswer);
        var limit = (long)_requestTimeout.TotalMilliseconds;
        var sending = Volatile.Read(ref _sendingSince);
        if (sending != 0 && now - Math.Max(sending, quietSince) > limit)
        {
            Abort(SshErrors.Stalled(Target, "the server took no request and answered none", _requestTimeout, SftpLimits.RequestTimeoutVariable));
            return;
        }
        if (!_versionReceived.Task.IsCompleted && now - quietSince > limit)
        {
            Abort(SshErrors.Stalled(Target, "its SFTP service did not answer the start of the session", _requestTimeout, SftpLimits.RequestTimeoutVariable));
            return;
        }
        var sentRequests = _pending.Values.Where(reply => reply.SentAt != 0).ToList();
        if (sentRequests.Count == 0)
            return;
        var factor = sentRequests.Max(reply => reply.TimeoutFactor);
        var oldest = sentRequests.MinBy(reply => reply.SentAt)!;
        if (now - Math.Max(oldest.SentAt, quietSince) > limit * factor)
        {
            Abort(SshErrors.Stalled(Target, $"the server answered none of its SFTP requests (one waiting: {oldest.Type.ToString().ToUpperInvariant()})",
                _requestTimeout * factor, SftpLimits.RequestTimeoutVariable));
        }
    }

    /// <summary>
    /// Ends the session with <paramref name="failure"/> (a lost connection, for the caller's reconnection path):
    /// every request in flight and every later one fails with it, and ssh is stopped, which frees the threads
    /// blocked on its pipes. Returns the failure that ended the session (an earlier one, if any, wins).
    /// </summary>
    internal BackupException Abort(BackupException failure)
    {
        var first = Interlocked.CompareExchange(ref _failure, failure, null);
        if (first is not null)
            return first;
        _watchdog?.Dispose();
        _versionReceived.TrySetException(failure);
        foreach (var id in _pending.Keys)
        {
            if (_pending.TryRemove(id, out var reply))
                reply.Fail(failure);
        }
        try
        {
            _outgoing.CompleteAdding();
        }
        catch (ObjectDisposedException)
        {
        }
        _ = Task.Run(async () => await _process.DisposeAsync().ConfigureAwait(false));
        return failure;
    }

    /// <summary>The next packet, or null at the end of the stream.</summary>
    private SftpResponse? ReadPacket()
    {
        if (_output.ReadAtLeast(_lengthBytes, 4, throwOnEndOfStream: false) < 4)
            return null;
        Volatile.Write(ref _lastAnswer, Environment.TickCount64);
        var length = BinaryPrimitives.ReadUInt32BigEndian(_lengthBytes);
        if (length is < 1 or > MaxReplyLength)
            throw new InvalidDataException($"a packet length of {length} bytes (is something printing on the server's login, e.g. from .bashrc?)");
        var buffer = ArrayPool<byte>.Shared.Rent((int)length);
        if (_output.ReadAtLeast(buffer.AsSpan(0, (int)length), (int)length, throwOnEndOfStream: false) < length)
        {
            ArrayPool<byte>.Shared.Return(buffer);
            return null;
        }
        return new SftpResponse(buffer, (int)length);
    }

    /// <summary>Why the session ended: ssh's own words once it has exited.</summary>
    private BackupException Ended(bool established)
    {
        if (_disposed)
            return SshErrors.ConnectionLost(Target, "the SFTP session was closed");
        int exitCode;
        try
        {
            exitCode = _process.WaitForExitAsync(CancellationToken.None).WaitAsync(TimeSpan.FromSeconds(10)).GetAwaiter().GetResult();
        }
        catch (TimeoutException)
        {
            return SshErrors.ConnectionLost(Target, "ssh closed its output but did not exit");
        }
        var stderr = _process.StandardError;
        if (!established)
        {
            return exitCode == SshErrors.SshFailureExitCode
                ? SshErrors.Classify(stderr, Target)
                : new BackupException(ErrorIds.SshFailed, BackupErrorCategory.ConnectionError,
                    $"The SFTP service of '{Target}' ended before it started (exit code {exitCode}): {SshErrors.SshWords(stderr)}.",
                    $"Check that 'sftp {Target}' works; the server's sshd_config needs a 'Subsystem sftp' line.", Target);
        }
        var words = SshErrors.SshWords(stderr);
        return SshErrors.ConnectionLost(Target, words.Length > 0 ? words : $"ssh exited with code {exitCode}");
    }

    // ------------------------------------------------------------------ replies

    private static (SftpStatusCode Code, string Message) StatusOf(SftpResponse response)
    {
        var body = response.Body();
        var code = (SftpStatusCode)body.ReadUInt32();
        // Version 3 servers send a message; a very old one may not.
        var message = body.Remaining >= 4 ? body.ReadString() : "";
        return (code, message);
    }

    private void ExpectOk(SftpResponse response, string operation, string path, bool modifies)
    {
        if (response.Type != SftpPacketType.Status || StatusOf(response).Code != SftpStatusCode.Ok)
            throw Unexpected(response, operation, path, modifies);
    }

    private byte[] ExpectHandle(SftpResponse response, string operation, string path, bool modifies)
    {
        if (response.Type != SftpPacketType.Handle)
            throw Unexpected(response, operation, path, modifies);
        return response.Body().ReadBytes().ToArray();
    }

    private SftpAttributes ExpectAttributes(SftpResponse response, string operation, string path)
    {
        if (response.Type != SftpPacketType.Attrs)
            throw Unexpected(response, operation, path, modifies: false);
        return response.Body().ReadAttributes();
    }

    private SftpPacketReader ExpectExtendedReply(SftpResponse response, string operation, string path)
    {
        if (response.Type != SftpPacketType.ExtendedReply)
            throw Unexpected(response, operation, path, modifies: false);
        return response.Body();
    }

    private Task<SftpAttributes?> StatPathAsync(SftpPacketType type, string path, CancellationToken ct) =>
        SendAsync(WithPath(type, path), reply =>
            reply.Type == SftpPacketType.Status && StatusOf(reply).Code == SftpStatusCode.NoSuchFile
                ? null
                : ExpectAttributes(reply, "read the attributes of", path), ct);

    /// <summary>Adds one READDIR reply's entries; false at the end of the folder.</summary>
    private bool ReadDirectoryBatch(SftpResponse reply, string path, List<SftpDirectoryEntry> entries)
    {
        if (reply.Type == SftpPacketType.Status && StatusOf(reply).Code == SftpStatusCode.Eof)
            return false;
        if (reply.Type != SftpPacketType.Name)
            throw Unexpected(reply, "list", path, modifies: false);
        var body = reply.Body();
        var count = body.ReadUInt32();
        if (entries.Count + count > SftpLimits.MaxDirectoryEntries)
            throw Protocol($"'{path}' lists more than {SftpLimits.MaxDirectoryEntries} entries");
        for (var i = 0; i < count; i++)
        {
            var name = body.ReadString();
            body.ReadString(); // the ls -l style long name
            var attributes = body.ReadAttributes();
            if (name is not ("." or ".."))
                entries.Add(new SftpDirectoryEntry(name, attributes));
        }
        return true;
    }

    /// <summary>The error for a reply that is not the expected one: a status becomes an error the user can act on.</summary>
    private BackupException Unexpected(SftpResponse response, string operation, string path, bool modifies)
    {
        if (response.Type != SftpPacketType.Status)
            return Protocol($"the server answered '{operation}' with packet type {(byte)response.Type}");
        var (code, message) = StatusOf(response);
        return StatusError(code, message, operation, path, modifies);
    }

    /// <summary>Maps an SFTP status to an error id. OpenSSH says only "Failure" when a disk is full: callers that
    /// write check the free space to tell DestinationFull apart (see the store's writer).</summary>
    private SftpStatusException StatusError(SftpStatusCode code, string serverMessage, string operation, string path, bool modifies)
    {
        var where = $"{Target}:{path}";
        var said = string.IsNullOrWhiteSpace(serverMessage) ? code.ToString() : serverMessage;
        return code switch
        {
            SftpStatusCode.NoSuchFile => new SftpStatusException(code, ErrorIds.PathNotFound, BackupErrorCategory.ObjectNotFound,
                $"Cannot {operation} '{where}': no such file or folder (the server said: {said}).",
                "Check the path on the server; a relative path starts at the SSH user's home folder.", where),
            SftpStatusCode.PermissionDenied when modifies => new SftpStatusException(code, ErrorIds.PathNotWritable, BackupErrorCategory.PermissionDenied,
                $"Cannot {operation} '{where}': permission denied (the server said: {said}).",
                "Give the SSH user write access to that folder on the server, or choose another destination.", where),
            SftpStatusCode.PermissionDenied => new SftpStatusException(code, ErrorIds.PathNotReadable, BackupErrorCategory.PermissionDenied,
                $"Cannot {operation} '{where}': permission denied (the server said: {said}).",
                "Give the SSH user read access to it on the server.", where),
            _ when LooksLikeFullDisk(serverMessage) => DestinationFull(code, operation, where, said),
            SftpStatusCode.OpUnsupported => new SftpStatusException(code, ErrorIds.SftpFailed, BackupErrorCategory.NotInstalled,
                $"Cannot {operation} '{where}': the SFTP server does not support it (the server said: {said}).",
                "Use an OpenSSH server for the destination.", where),
            _ => new SftpStatusException(code, ErrorIds.SftpFailed, modifies ? BackupErrorCategory.WriteError : BackupErrorCategory.InvalidResult,
                $"Cannot {operation} '{where}': the server said: {said} (SFTP status {(uint)code}).",
                "Look at the server's logs (auth.log or the journal of sshd) for the cause.", where),
        };
    }

    internal static SftpStatusException DestinationFull(SftpStatusCode code, string operation, string where, string said) =>
        new(code, ErrorIds.DestinationFull, BackupErrorCategory.ResourceUnavailable,
            $"Cannot {operation} '{where}': the file system on the server is full (the server said: {said}).",
            "Free space on the server or choose another destination.", where);

    private static bool LooksLikeFullDisk(string message) =>
        message.Contains("space", StringComparison.OrdinalIgnoreCase) || message.Contains("quota", StringComparison.OrdinalIgnoreCase);

    private BackupException Protocol(string what) =>
        new(ErrorIds.SftpFailed, BackupErrorCategory.InvalidResult, $"The SFTP session with '{Target}' failed: {what}.",
            "Check that the server runs OpenSSH's SFTP service and that the SSH user's login prints nothing (no echo in .bashrc).", Target);
}
