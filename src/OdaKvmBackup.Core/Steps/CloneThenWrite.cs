namespace OdaKvmBackup.Core.Steps;

/// <summary>
/// The new copy's file while the destination clones the base copy into it (issue 15). The clone takes a server
/// round trip at least (0.7 s measured to the lab's sshd: a new ssh connection, then cp), and a sparse copy of the
/// whole base where the file system cannot clone: time the VM would spend on its overlay if the copy waited for it.
/// So the copy reads and compares the frozen disk at once, and the blocks it writes meanwhile are held in memory, up
/// to <see cref="DefaultHeldBytes"/>, and written into the clone, in their order, once it is made: only a write past
/// that bound, or the copy's end, waits for the clone. A clone that fails cancels <see cref="Failed"/> at once (the
/// copy stops reading) and says why in <see cref="FailedBecause"/>; the held blocks are dropped, and
/// <see cref="CopyService"/> copies the disk in full.
/// </summary>
internal sealed class CloneThenWrite : IStoreFileWriter
{
    private readonly DiskBase _base;
    private readonly CancellationTokenSource _stop;
    private readonly CancellationTokenSource _failed = new(); // no timer: nothing to dispose
    private readonly Task<(CloneResult Clone, IStoreFileWriter Writer)> _opening;
    private readonly long _heldLimit;
    // Written before the clone was made, in the order written; the copy's writes come one at a time.
    private readonly List<(long Offset, byte[] Data)> _held = new();
    private long _heldBytes;

    /// <summary>What a copy may hold in memory while its clone is made: 64 MiB, a second or so of reading.</summary>
    public const long DefaultHeldBytes = 64L << 20;

    /// <summary>Starts the clone of <paramref name="chosen"/>'s copy into <paramref name="partial"/> (the journal
    /// names the base first: <see cref="Run.BackupRun.RecordCopyStart"/>).</summary>
    public CloneThenWrite(IBackupStore store, DiskBase chosen, string partial, CancellationToken ct, long heldLimit = DefaultHeldBytes)
    {
        _base = chosen;
        _heldLimit = heldLimit;
        _stop = CancellationTokenSource.CreateLinkedTokenSource(ct);
        var stop = _stop.Token;
        _opening = Task.Run(() => OpenAsync(store, chosen, partial, stop), CancellationToken.None);
    }

    /// <summary>Cancelled when the clone fails: the copy reading meanwhile stops, not at its end.</summary>
    public CancellationToken Failed => _failed.Token;

    /// <summary>Why the clone could not be made, once it has failed; null while it runs, once it is made, or when it
    /// was stopped.</summary>
    public string? FailedBecause =>
        _opening is { IsFaulted: true, Exception.InnerException: { } ex } && ex is BackupException or NotSupportedException or IOException or UnauthorizedAccessException
            ? $"the copy of set {_base.RunId} could not be cloned at the destination ({ex.Message.TrimEnd('.')})"
            : null;

    /// <summary>How the clone was stored, and the base's data it took without moving it (a reflink: the base list's
    /// 64 KiB blocks that are not zeros; a local copy: the bytes it went through). Asked once the copy is complete.</summary>
    public (string StoredAs, long BytesCloned) Stored
    {
        get
        {
            var clone = _opening.Result.Clone;
            return (clone.StoredAs, clone.StoredAs == FileClone.Reflink ? _base.List.DataBytes() : clone.CopiedBytes);
        }
    }

    public ValueTask WriteAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        if (_opening.IsCompletedSuccessfully && _held.Count == 0)
            return _opening.Result.Writer.WriteAsync(offset, data, ct);
        if (!_opening.IsCompleted && _heldBytes + data.Length <= _heldLimit)
        {
            _held.Add((offset, data.ToArray()));
            _heldBytes += data.Length;
            return ValueTask.CompletedTask;
        }
        return WriteAfterCloneAsync(offset, data, ct);
    }

    public async Task CompleteAsync(long size, CancellationToken ct)
    {
        var writer = await OpenedAsync(ct).ConfigureAwait(false);
        await WriteHeldAsync(writer, ct).ConfigureAwait(false);
        await writer.CompleteAsync(size, ct).ConfigureAwait(false);
    }

    /// <summary>Stops a clone still running (the copy failed or was stopped) and waits for it, so that nothing
    /// writes the file once the copy has ended; its failure is the copy's to tell.</summary>
    public async ValueTask DisposeAsync()
    {
        if (!_opening.IsCompleted)
            await _stop.CancelAsync().ConfigureAwait(false);
        try
        {
            await _opening.ConfigureAwait(false);
        }
        catch (Exception)
        {
            return; // no file was opened
        }
        finally
        {
            _stop.Dispose(); // not _failed: the copy's own token source is linked to it
        }
        await _opening.Result.Writer.DisposeAsync().ConfigureAwait(false);
    }

    private async ValueTask WriteAfterCloneAsync(long offset, ReadOnlyMemory<byte> data, CancellationToken ct)
    {
        var writer = await OpenedAsync(ct).ConfigureAwait(false);
        await WriteHeldAsync(writer, ct).ConfigureAwait(false);
        await writer.WriteAsync(offset, data, ct).ConfigureAwait(false);
    }

    /// <summary>The blocks held while the clone was made, first: a later write of the same block must win.</summary>
    private async Task WriteHeldAsync(IStoreFileWriter writer, CancellationToken ct)
    {
        foreach (var (offset, data) in _held)
            await writer.WriteAsync(offset, data, ct).ConfigureAwait(false);
        _held.Clear();
        _heldBytes = 0;
    }

    /// <summary>The clone's writer, once the clone is made (its failure is thrown).</summary>
    private async Task<IStoreFileWriter> OpenedAsync(CancellationToken ct) => (await _opening.WaitAsync(ct).ConfigureAwait(false)).Writer;

    private async Task<(CloneResult, IStoreFileWriter)> OpenAsync(IBackupStore store, DiskBase chosen, string partial, CancellationToken ct)
    {
        try
        {
            var clone = await store.CloneFileAsync(chosen.CopyPath, partial, ct).ConfigureAwait(false);
            if (clone.SizeBytes != chosen.List.FileSize)
                throw new IOException($"the clone holds {clone.SizeBytes} bytes, not the {chosen.List.FileSize} of the base's digest list");
            return (clone, await store.OpenForWriteAsync(partial, ct).ConfigureAwait(false));
        }
        catch (Exception) when (!ct.IsCancellationRequested)
        {
            // Before the opening ends: the copy, stopped by it, finds FailedBecause set once this writer is disposed.
            await _failed.CancelAsync().ConfigureAwait(false);
            throw;
        }
    }
}
