namespace OdaKvmBackup.Core.Stores;

/// <summary>
/// Reads a file on an SSH server. Reads that follow one another are served from READs sent ahead (several in
/// flight), so a sequential read runs at the speed of the link; a read elsewhere starts a new run. A lost connection
/// is made again and the file reopened, as the writer does; so is a read that gets no answer for
/// <see cref="SftpLimits.StallLimit"/> (the stall watchdog).
/// </summary>
internal sealed class SshStoreFileReader : IStoreFileReader
{
    private const int ReadAhead = 16;

    private readonly SftpConnection _connection;
    private readonly string _path;
    private readonly Queue<Prefetch> _ahead = new();
    private readonly Stack<byte[]> _freeBuffers = new();
    private readonly TimeSpan _stallLimit = SftpLimits.StallLimit;
    private SftpClient _session = null!;
    private SftpHandle _handle = null!;
    private long _nextOffset;

    private SshStoreFileReader(SftpConnection connection, string path)
    {
        _connection = connection;
        _path = path;
    }

    public long Size { get; private set; }

    public static async Task<SshStoreFileReader> OpenAsync(SftpConnection connection, string path, CancellationToken ct)
    {
        var reader = new SshStoreFileReader(connection, path);
        try
        {
            reader._session = await connection.GetAsync(ct).ConfigureAwait(false);
            await reader.OpenHandleAsync(ct).ConfigureAwait(false);
            return reader;
        }
        catch
        {
            await reader.DisposeAsync().ConfigureAwait(false);
            throw;
        }
    }

    public async ValueTask<int> ReadAsync(long offset, Memory<byte> buffer, CancellationToken ct)
    {
        var attempts = new ReconnectAttempts();
        while (true)
        {
            try
            {
                return await ReadAheadAsync(offset, buffer, ct).ConfigureAwait(false);
            }
            catch (BackupException ex) when (SftpConnection.IsConnectionProblem(ex) && _session.Failure is not null)
            {
                _ahead.Clear();
                _session = await _connection.ReconnectAsync(_session, ex, attempts, ct).ConfigureAwait(false);
                await OpenHandleAsync(ct).ConfigureAwait(false);
            }
        }
    }

    public ValueTask DisposeAsync() => _connection.DisposeAsync();

    /// <summary>Only a regular file is opened (lstat first): a FIFO on the server would block its SFTP service on
    /// the open, a device would read without end. The open file is looked at again.</summary>
    private async Task OpenHandleAsync(CancellationToken ct)
    {
        var named = await _session.LStatAsync(_path, ct).ConfigureAwait(false) ?? throw SmallFiles.NotFound(_path);
        if (SmallFiles.NonRegularKind(named.Permissions) is { } kind)
            throw SmallFiles.NotAStoredCopy(_path, $"is {kind}, not a regular file");
        _handle = await _session.OpenAsync(_path, SftpOpenFlags.Read, null, ct).ConfigureAwait(false);
        var opened = await _session.StatAsync(_handle, ct).ConfigureAwait(false);
        if (SmallFiles.NonRegularKind(opened.Permissions) is { } swapped)
            throw SmallFiles.NotAStoredCopy(_path, $"is {swapped}, not a regular file");
        Size = opened.Size ?? 0;
    }

    private async Task<int> ReadAheadAsync(long offset, Memory<byte> destination, CancellationToken ct)
    {
        if (destination.IsEmpty)
            return 0;
        if (_ahead.Count == 0 || _ahead.Peek().Position != offset)
        {
            // Not where the reads ahead are: drop them (their buffers too: a dropped READ may still fill its own).
            _ahead.Clear();
            _nextOffset = offset;
        }
        while (_ahead.Count < ReadAhead)
        {
            var buffer = _freeBuffers.Count > 0 ? _freeBuffers.Pop() : new byte[_session.MaxReadLength];
            var prefetch = new Prefetch(_nextOffset, buffer);
            prefetch.Read = _session.ReadAsync(_handle, prefetch.Offset, prefetch.Buffer, CancellationToken.None);
            _ahead.Enqueue(prefetch);
            _nextOffset += prefetch.Buffer.Length;
        }
        var next = _ahead.Peek();
        // Reads are answered in order: no answer to the oldest for the stall limit means the data stopped moving.
        await ((Task)next.Read!).WaitAsync(_stallLimit, ct).ConfigureAwait(ConfigureAwaitOptions.SuppressThrowing);
        ct.ThrowIfCancellationRequested();
        if (!next.Read.IsCompleted)
            _session.Abort(SshErrors.Stalled(_session.Target, "none of the reads sent to it was answered", _stallLimit, SftpLimits.StallVariable));
        var received = await next.Read.WaitAsync(ct).ConfigureAwait(false);
        if (received == 0)
        {
            _ahead.Clear();
            return 0;
        }
        var count = Math.Min(received - next.Consumed, destination.Length);
        next.Buffer.AsMemory(next.Consumed, count).CopyTo(destination);
        next.Consumed += count;
        if (next.Consumed == received)
        {
            _freeBuffers.Push(_ahead.Dequeue().Buffer);
            // A short READ before the end: the reads ahead no longer follow on; the next call starts a new run.
            if (received < next.Buffer.Length)
                _ahead.Clear();
        }
        return count;
    }

    private sealed class Prefetch(long offset, byte[] buffer)
    {
        public long Offset { get; } = offset;
        public byte[] Buffer { get; } = buffer;
        public Task<int>? Read { get; set; }
        public int Consumed { get; set; }
        public long Position => Offset + Consumed;
    }
}
