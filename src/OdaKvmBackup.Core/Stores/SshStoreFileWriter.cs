namespace OdaKvmBackup.Core.Stores;

/// <summary>
/// Writes a file on an SSH server at offsets with many WRITEs in flight. Contiguous data is gathered into chunks of
/// the server's write size; what is never written stays a hole (or, in a file opened with
/// <see cref="OpenExistingAsync"/>, keeps what it held). Every chunk is kept until the server acknowledges it, so when
/// the connection breaks the writer connects again, reopens the file (never truncating or creating it, however it was
/// first opened: what the server acknowledged is in the file) and sends the unacknowledged chunks again. A copy whose writes stop being acknowledged for <see cref="SftpLimits.StallLimit"/>
/// is a lost connection too (its stall watchdog). Not for concurrent calls: one copy loop drives it.
/// </summary>
internal sealed class SshStoreFileWriter : IStoreFileWriter
{
    private const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    /// <summary>How a file already there is (re)opened: for writing only, never truncated, never created.</summary>
    internal const SftpOpenFlags InPlace = SftpOpenFlags.Write;

    private const string NotWritten = "nothing was written to it";

    // 64 chunks in flight, as OpenSSH's own sftp and scp do: with 255 KiB chunks that is 16 MiB, more than the
    // SSH channel window, so the link never waits for an acknowledgement. Chunks are at most 256 KiB whatever the
    // server announces (SftpLimits), so a copy never holds more than 16 MiB.
    private const int Window = 64;

    // When the window is full, buffers are taken back this many at a time: one wake-up per batch of
    // acknowledgements instead of one per chunk (each costs a thread-pool hop, which adds up at 4000 chunks per GiB).
    private const int AcknowledgementBatch = Window / 4;

    private readonly SftpConnection _connection;
    private readonly string _path;
    private readonly Queue<Chunk> _inFlight = new();
    private readonly Stack<byte[]> _freeBuffers = new();
    private readonly TimeSpan _stallLimit = SftpLimits.StallLimit;
    private ReconnectAttempts _attempts = new();
    private SftpClient _session = null!;
    private SftpHandle? _handle;
    private int _chunkLength;
    private int _buffersMade;
    private Chunk? _filling;
    private bool _completed;

    private readonly Func<SftpConnection, ValueTask>? _release;
    private bool _closed; // completed: every write acknowledged, the file synced and its handle closed

    private SshStoreFileWriter(SftpConnection connection, string path, Func<SftpConnection, ValueTask>? release)
    {
        _connection = connection;
        _path = path;
        _release = release;
    }

    /// <summary>Creates (or truncates) the file, mode 0600 whatever the server's umask or the file's old mode. A writer
    /// that completed hands its connection to <paramref name="release"/> (for the next file), else it is closed.</summary>
    public static async Task<SshStoreFileWriter> CreateAsync(SftpConnection connection, string path, CancellationToken ct,
        Func<SftpConnection, ValueTask>? release = null)
    {
        var writer = new SshStoreFileWriter(connection, path, release);
        try
        {
            writer._session = await connection.GetAsync(ct).ConfigureAwait(false);
            await writer.WithReconnectAsync(async () =>
            {
                var handle = await writer._session.OpenAsync(path, SftpOpenFlags.Write | SftpOpenFlags.Create | SftpOpenFlags.Truncate, FileMode, ct).ConfigureAwait(false);
                writer._handle = handle;
                await writer._session.SetStatAsync(handle, SftpAttributes.WithMode(FileMode), ct).ConfigureAwait(false);
            }, ct).ConfigureAwait(false);
            writer._chunkLength = writer._session.MaxWriteLength;
            return writer;
        }
        catch
        {
            await writer.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    /// <summary>
    /// Opens an existing regular file (a clone of the previous set's copy) for writing in place: no truncation, no
    /// creation, mode made 0600. It is looked at before it is opened (a FIFO would block the server's SFTP service on
    /// the open; a link is not followed) and again once open. A lost connection while opening opens it again the same way.
    /// </summary>
    public static async Task<SshStoreFileWriter> OpenExistingAsync(SftpConnection connection, string path, CancellationToken ct,
        Func<SftpConnection, ValueTask>? release = null)
    {
        var writer = new SshStoreFileWriter(connection, path, release);
        try
        {
            writer._session = await connection.GetAsync(ct).ConfigureAwait(false);
            await writer.WithReconnectAsync(async () =>
            {
                await writer.OpenInPlaceAsync(ct).ConfigureAwait(false);
                await writer._session.SetStatAsync(writer._handle!, SftpAttributes.WithMode(FileMode), ct).ConfigureAwait(false);
            }, ct).ConfigureAwait(false);
            writer._chunkLength = writer._session.MaxWriteLength;
            return writer;
        }
        catch
        {
            await writer.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    public async ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        ObjectDisposedException.ThrowIf(_completed, this);
        while (!data.IsEmpty)
        {
            if (_filling is not null && (_filling.End != offset || _filling.Length == _chunkLength))
            {
                Send(_filling);
                _filling = null;
            }
            _filling ??= new Chunk(offset, await TakeBufferAsync(ct).ConfigureAwait(false));
            var count = Math.Min(data.Length, _chunkLength - _filling.Length);
            data[..count].CopyTo(_filling.Buffer.AsMemory(_filling.Length));
            _filling.Length += count;
            offset += count;
            data = data[count..];
        }
    }

    public async Task CompleteAsync(long size, CancellationToken ct)
    {
        if (_filling is not null)
            Send(_filling);
        _filling = null;
        while (_inFlight.Count > 0)
            await AcknowledgeOldestAsync(ct).ConfigureAwait(false);
        // The size makes a trailing hole; fsync makes it all durable (also what an earlier session wrote).
        await WithReconnectAsync(() => _session.SetStatAsync(_handle!, new SftpAttributes { Size = size }, ct), ct).ConfigureAwait(false);
        await WithReconnectAsync(() => _session.FsyncAsync(_handle!, ct), ct).ConfigureAwait(false);
        await _session.CloseAsync(_handle!, ct).ConfigureAwait(false);
        _completed = true;
        _closed = true;
    }

    /// <summary>Ends the session, or hands it on when the file was completed (nothing of it is left in the session);
    /// a file not completed stays as far as it got (the caller deletes it).</summary>
    public ValueTask DisposeAsync()
    {
        _completed = true;
        return _closed && _release is not null ? _release(_connection) : _connection.DisposeAsync();
    }

    private void Send(Chunk chunk)
    {
        chunk.Acknowledged = _session.WriteAsync(_handle!, chunk.Offset, chunk.Buffer.AsMemory(0, chunk.Length), CancellationToken.None);
        _inFlight.Enqueue(chunk);
    }

    /// <summary>A free chunk buffer: a new one while the window is not full, else those of the oldest chunks once acknowledged.</summary>
    private async ValueTask<byte[]> TakeBufferAsync(CancellationToken ct)
    {
        while (_freeBuffers.Count == 0)
        {
            if (_buffersMade < Window)
            {
                _buffersMade++;
                return new byte[_chunkLength];
            }
            var batch = Math.Min(AcknowledgementBatch, _inFlight.Count);
            // Acknowledgements come in order: once the batch's last is in, the oldest ones are taken without waiting.
            await WaitWhileMovingAsync(_inFlight.ElementAt(batch - 1).Acknowledged!, ct).ConfigureAwait(false);
            ct.ThrowIfCancellationRequested();
            for (var i = 0; i < batch && _inFlight.Count > 0; i++)
                await AcknowledgeOldestAsync(ct).ConfigureAwait(false);
        }
        return _freeBuffers.Pop();
    }

    private async Task AcknowledgeOldestAsync(CancellationToken ct)
    {
        var chunk = _inFlight.Peek();
        try
        {
            await WaitWhileMovingAsync(chunk.Acknowledged!, ct).ConfigureAwait(false);
            await chunk.Acknowledged!.WaitAsync(ct).ConfigureAwait(false);
        }
        catch (BackupException ex) when (SftpConnection.IsConnectionProblem(ex))
        {
            await ReconnectAndResendAsync(ex, ct).ConfigureAwait(false);
            return;
        }
        catch (SftpStatusException ex) when (ex.Status == SftpStatusCode.Failure)
        {
            throw await FullDiskOrAsync(ex, chunk.Length, ct).ConfigureAwait(false);
        }
        _inFlight.Dequeue();
        _freeBuffers.Push(chunk.Buffer);
        _attempts = new ReconnectAttempts(); // progress again: a later drop gets the whole policy
    }

    /// <summary>
    /// The stall watchdog: waits for <paramref name="acknowledged"/> (without throwing its failure) as long as the
    /// server goes on acknowledging chunks. When none is acknowledged for the stall limit, the session is ended as
    /// a lost connection: every chunk in flight then fails with it, and the caller connects again and sends them again.
    /// </summary>
    private async Task WaitWhileMovingAsync(Task acknowledged, CancellationToken ct)
    {
        var done = CountAcknowledged();
        while (!acknowledged.IsCompleted)
        {
            await acknowledged.WaitAsync(_stallLimit, ct).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
            ct.ThrowIfCancellationRequested();
            if (acknowledged.IsCompleted)
                return;
            var now = CountAcknowledged();
            if (now == done)
            {
                _session.Abort(SshErrors.Stalled(_session.Target, "no data written to it was acknowledged", _stallLimit, SftpLimits.StallVariable));
                return;
            }
            done = now;
        }
    }

    private int CountAcknowledged() => _inFlight.Count(chunk => chunk.Acknowledged is { IsCompleted: true });

    private async Task ReconnectAndResendAsync(BackupException lost, CancellationToken ct)
    {
        while (true)
        {
            _session = await _connection.ReconnectAsync(_session, lost, _attempts, ct).ConfigureAwait(false);
            try
            {
                // Opened again in place, whether it was created or opened: what the server acknowledged is in the
                // file. (While the file is being opened there is nothing to reopen yet.)
                if (_handle is null)
                    return;
                await OpenInPlaceAsync(ct).ConfigureAwait(false);
                foreach (var chunk in _inFlight)
                {
                    _ = chunk.Acknowledged?.Exception; // observed: the old session's failure is replaced
                    chunk.Acknowledged = _session.WriteAsync(_handle!, chunk.Offset, chunk.Buffer.AsMemory(0, chunk.Length), CancellationToken.None);
                }
                return;
            }
            catch (BackupException ex) when (SftpConnection.IsConnectionProblem(ex))
            {
                lost = ex;
            }
        }
    }

    /// <summary>Opens the file for writing without O_TRUNC or O_CREAT, only when it is a regular file (looked at
    /// without following a link, and again once open).</summary>
    private async Task OpenInPlaceAsync(CancellationToken ct)
    {
        var where = $"{_session.Target}:{_path}";
        var named = await _session.LStatAsync(_path, ct).ConfigureAwait(false) ?? throw SmallFiles.NotFound(where);
        if (SmallFiles.NonRegularKind(named.Permissions) is { } kind)
            throw SmallFiles.NotAStoredCopy(where, $"is {kind}, not a regular file", NotWritten);
        _handle = await _session.OpenAsync(_path, InPlace, null, ct).ConfigureAwait(false);
        var opened = await _session.StatAsync(_handle, ct).ConfigureAwait(false);
        if (SmallFiles.NonRegularKind(opened.Permissions) is { } swapped)
            throw SmallFiles.NotAStoredCopy(where, $"is {swapped}, not a regular file", NotWritten);
    }

    private async Task WithReconnectAsync(Func<Task> step, CancellationToken ct)
    {
        while (true)
        {
            try
            {
                await step().ConfigureAwait(false);
                return;
            }
            catch (BackupException ex) when (SftpConnection.IsConnectionProblem(ex) && _session.Failure is not null)
            {
                await ReconnectAndResendAsync(ex, ct).ConfigureAwait(false);
            }
        }
    }

    /// <summary>OpenSSH answers a write to a full disk with a bare "Failure": the free space tells.</summary>
    private async Task<BackupException> FullDiskOrAsync(SftpStatusException failure, int chunkLength, CancellationToken ct)
    {
        try
        {
            var folder = _path.Contains('/') ? _path[.._path.LastIndexOf('/')] : ".";
            var fileSystem = await _session.StatVfsAsync(folder.Length == 0 ? "/" : folder, ct).ConfigureAwait(false);
            if (fileSystem.AvailableBytes < chunkLength)
                return SftpClient.DestinationFull(failure.Status, "write to", $"{_session.Target}:{_path}", "Failure");
        }
        catch (BackupException)
        {
            // The free space cannot be read: the original error is the better one.
        }
        return failure;
    }

    private sealed class Chunk(long offset, byte[] buffer)
    {
        public long Offset { get; } = offset;
        public byte[] Buffer { get; } = buffer;
        public int Length { get; set; }
        public long End => Offset + Length;
        public Task? Acknowledged { get; set; }
    }
}
