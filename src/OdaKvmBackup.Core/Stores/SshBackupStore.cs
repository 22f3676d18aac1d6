using System.Globalization;
using System.Security.Cryptography;

namespace OdaKvmBackup.Core.Stores;

/// <summary>
/// A backup store in a folder on an SSH server, over SFTP: the server needs sshd with its sftp subsystem, plus a POSIX
/// sh with dd and python3 (or openssl, or sha256sum with nproc and xargs) for <see cref="SegmentDigestsAsync"/>, a Python
/// (or GNU cmp) for <see cref="FindNonZeroAsync"/>, GNU cp and stat for <see cref="CloneFileAsync"/>, and <c>sync</c> to
/// flush a renamed folder.
/// Small operations share one SFTP session; each file being written or read has its own, so a large copy does not
/// wait behind others. A connection lost after it worked is made again (see <see cref="SshReconnectPolicy"/>) and the
/// operation runs again; the operations are written so that running one twice is harmless.
/// </summary>
internal sealed class SshBackupStore : IBackupStore
{
    private const UnixFileMode FolderMode = UnixFileMode.UserRead | UnixFileMode.UserWrite | UnixFileMode.UserExecute;
    private const UnixFileMode FileMode = UnixFileMode.UserRead | UnixFileMode.UserWrite;

    // ssh sends the remote command as one string, which Linux limits to 128 KiB: digests are asked in batches.
    private const int SegmentsPerCommand = 2000;
    private const int RangesPerCommand = 1500;

    private readonly SshClient _ssh;
    private readonly SshReconnectPolicy _reconnect;
    private readonly SftpConnection _control;
    private readonly string _root;
    // SFTP connections of completed writers, for the next file: each new one costs a TCP and SSH handshake and a
    // login (0.3-0.5 s measured on the lab), on the VM's time on its overlay. Closed with the store.
    private readonly Stack<SftpConnection> _spare = new();
    private bool _disposed;
    private uint? _writerId;

    public SshBackupStore(SshClient ssh, SshReconnectPolicy? reconnect = null)
    {
        _ssh = ssh;
        _reconnect = reconnect ?? SshReconnectPolicy.Default;
        _control = new SftpConnection(ssh, _reconnect);
        // SFTP paths that do not start with '/' are relative to the home folder, which is what "~/" means to scp.
        var path = ssh.Destination.Path;
        _root = path == "~" ? "" : path.StartsWith("~/", StringComparison.Ordinal) ? path[2..] : path;
    }

    public string Location => _ssh.Destination.ToString();

    public bool IsRemote => true;

    public string Describe(string relativePath) => _ssh.Destination.WithPath(RemotePath(relativePath)).ToString();

    /// <summary>The tool the server hashed with for the latest <see cref="SegmentDigestsAsync"/> ("python3",
    /// "openssl", "sha256sum"...); null before the first.</summary>
    public string? DigestTool { get; private set; }

    public Task CheckWritableAsync(CancellationToken ct) => RunAsync(async (session, _) =>
    {
        var root = RemotePath("");
        var attributes = await session.StatAsync(root, ct).ConfigureAwait(false);
        if (attributes is null || !attributes.IsDirectory)
        {
            throw new BackupException(ErrorIds.PathNotFound, BackupErrorCategory.ObjectNotFound,
                $"The destination folder '{Location}' {(attributes is null ? "does not exist" : "is not a folder")}.",
                "Create the folder on the server (mkdir -m 700), or correct the destination; a relative path starts at the SSH user's home folder.", Location);
        }
        // A new random name with create-new: never follows or overwrites what is there.
        var probe = Join(root, Paths.BackupNames.StoreProbeFileName());
        try
        {
            var handle = await session.OpenAsync(probe, SftpOpenFlags.Write | SftpOpenFlags.Create | SftpOpenFlags.Exclusive, FileMode, ct).ConfigureAwait(false);
            // Whoever the login is, what it creates is its own: the owner every folder the backup writes into must have.
            _writerId = (await session.StatAsync(handle, ct).ConfigureAwait(false)).Uid;
            await session.CloseAsync(handle, ct).ConfigureAwait(false);
        }
        catch (SftpStatusException ex)
        {
            throw new BackupException(ErrorIds.PathNotWritable, BackupErrorCategory.PermissionDenied,
                $"The destination folder '{Location}' cannot be written: {ex.Message}",
                "Give the SSH user write access to the folder on the server (and check that its file system is not read-only), or choose another destination.", Location, ex);
        }
        await session.RemoveAsync(probe, ct).ConfigureAwait(false);
        return true;
    }, ct);

    public Task<long> GetFreeBytesAsync(CancellationToken ct) =>
        RunAsync(async (session, _) => (await session.StatVfsAsync(RemotePath(""), ct).ConfigureAwait(false)).AvailableBytes, ct);

    public Task<StoreEntry?> GetEntryAsync(string relativePath, CancellationToken ct) => RunAsync(async (session, _) =>
    {
        var attributes = await session.StatAsync(RemotePath(relativePath), ct).ConfigureAwait(false);
        return attributes is null ? null : ToEntry(Name(relativePath), attributes);
    }, ct);

    public Task<IReadOnlyList<StoreEntry>> ListAsync(string relativeFolder, CancellationToken ct) => RunAsync(async (session, _) =>
    {
        try
        {
            var entries = await session.ListDirectoryAsync(RemotePath(relativeFolder), ct).ConfigureAwait(false);
            return (IReadOnlyList<StoreEntry>)entries.Select(entry => ToEntry(entry.Name, entry.Attributes)).ToList();
        }
        catch (SftpStatusException ex) when (ex.Status == SftpStatusCode.NoSuchFile)
        {
            return [];
        }
    }, ct);

    public Task CreateFolderAsync(string relativePath, CancellationToken ct) => RunAsync(async (session, _) =>
    {
        var folder = RemotePath("");
        foreach (var part in Parts(relativePath))
        {
            folder = Join(folder, part);
            await CreateOneFolderAsync(session, folder, ct).ConfigureAwait(false);
        }
        return true;
    }, ct);

    public async Task WriteSmallFileAsync(string relativePath, byte[] content, CancellationToken ct)
    {
        var target = RemotePath(relativePath);
        string? temporary = null;
        await RunAsync(async (session, retried) =>
        {
            if (retried && temporary is not null)
                await RemoveIfThereAsync(session, temporary, ct).ConfigureAwait(false);
            temporary = Join(Parent(target), Paths.BackupNames.StoreTempName(Name(relativePath)));
            var handle = await session.OpenAsync(temporary, SftpOpenFlags.Write | SftpOpenFlags.Create | SftpOpenFlags.Exclusive, FileMode, ct).ConfigureAwait(false);
            try
            {
                await session.SetStatAsync(handle, SftpAttributes.WithMode(FileMode), ct).ConfigureAwait(false);
                var writes = new List<Task>();
                for (var offset = 0; offset < content.Length; offset += session.MaxWriteLength)
                    writes.Add(session.WriteAsync(handle, offset, content.AsMemory(offset, Math.Min(session.MaxWriteLength, content.Length - offset)), ct));
                await Task.WhenAll(writes).ConfigureAwait(false);
                await session.FsyncAsync(handle, ct).ConfigureAwait(false);
            }
            finally
            {
                if (session.Failure is null)
                    await session.CloseAsync(handle, ct).ConfigureAwait(false);
            }
            await session.PosixRenameAsync(temporary, target, ct).ConfigureAwait(false);
            await SyncRenamedFileAsync(session, target, ct).ConfigureAwait(false);
            return true;
        }, ct).ConfigureAwait(false);
    }

    /// <summary>Only a regular file within its cap is read (see <see cref="SmallFiles"/>): what the name is (lstat)
    /// is looked at before it is opened, so a FIFO, device, socket, folder or link is never opened on the server;
    /// the open file is looked at again, and never read past the cap.</summary>
    public Task<byte[]> ReadSmallFileAsync(string relativePath, CancellationToken ct) => RunAsync(async (session, _) =>
    {
        var path = RemotePath(relativePath);
        var where = Describe(relativePath);
        var limit = SmallFiles.LimitFor(relativePath);
        try
        {
            var named = await session.LStatAsync(path, ct).ConfigureAwait(false) ?? throw SmallFiles.NotFound(where);
            SmallFiles.Require(where, named.Permissions, named.Size ?? 0, limit);
            var handle = await session.OpenAsync(path, SftpOpenFlags.Read, null, ct).ConfigureAwait(false);
            try
            {
                var opened = await session.StatAsync(handle, ct).ConfigureAwait(false);
                SmallFiles.Require(where, opened.Permissions, opened.Size ?? 0, limit);
                using var content = new MemoryStream();
                var buffer = new byte[session.MaxReadLength];
                int read;
                while (content.Length <= limit
                    && (read = await session.ReadAsync(handle, content.Length, buffer.AsMemory(0, (int)Math.Min(buffer.Length, limit + 1 - content.Length)), ct).ConfigureAwait(false)) > 0)
                    content.Write(buffer, 0, read);
                if (content.Length > limit)
                    throw SmallFiles.TooLarge(where, content.Length, limit); // it grew since it was looked at
                return content.ToArray();
            }
            finally
            {
                if (session.Failure is null)
                    await session.CloseAsync(handle, ct).ConfigureAwait(false);
            }
        }
        catch (SftpStatusException ex) when (ex.Status != SftpStatusCode.NoSuchFile)
        {
            // Permission denied and the like: this set cannot be read, the others may be.
            throw SmallFiles.Unreadable(where, ex.Message.TrimEnd('.'), ex);
        }
    }, ct);

    public async Task<IStoreFileWriter> CreateFileAsync(string relativePath, CancellationToken ct) =>
        await SshStoreFileWriter.CreateAsync(TakeConnection(), RemotePath(relativePath), ct, ReleaseAsync).ConfigureAwait(false);

    /// <summary>A spare connection, or a new one (it connects on first use).</summary>
    private SftpConnection TakeConnection()
    {
        lock (_spare)
            return _spare.Count > 0 ? _spare.Pop() : new SftpConnection(_ssh, _reconnect);
    }

    /// <summary>Keeps a connection for the next file (a few at most), or closes it once the store is closed.</summary>
    private async ValueTask ReleaseAsync(SftpConnection connection)
    {
        lock (_spare)
        {
            if (!_disposed && _spare.Count < SpareConnections)
            {
                _spare.Push(connection);
                return;
            }
        }
        await connection.DisposeAsync().ConfigureAwait(false);
    }

    // As many as copies run at once by default (-ThrottleLimit 2), and one more.
    private const int SpareConnections = 3;

    /// <summary>
    /// Runs <see cref="ServerScripts.CloneFile"/> on the server: <c>cp --reflink=always</c>, else a sparse copy
    /// there; the file never crosses the network. Not run again when the connection is lost (a cp may still be
    /// running on the server, and the new file's name would be taken): the caller's clean-up removes the new file.
    /// </summary>
    public async Task<CloneResult> CloneFileAsync(string baseRelative, string newRelative, CancellationToken ct)
    {
        string[] arguments = [ScriptPath(RemotePath(baseRelative)), ScriptPath(RemotePath(newRelative))];
        // The writer that follows a clone gets a connection made while cp runs.
        var spare = TakeConnection();
        var warming = spare.WarmAsync(ct);
        ProcessResult result;
        try
        {
            // A local copy of a large file on the server takes as long as its data: the long-work time limit.
            result = await _ssh.RunScriptAsync(ServerScripts.CloneFile, arguments, ct, Host.ToolTimeouts.LongWork).ConfigureAwait(false);
        }
        finally
        {
            await warming.ConfigureAwait(false);
            await ReleaseAsync(spare).ConfigureAwait(false);
        }
        var error = result.StandardError.Trim();
        if (result.ExitCode == ServerScripts.FileMissing)
        {
            throw new BackupException(ErrorIds.BackupCopyMissing, BackupErrorCategory.ObjectNotFound,
                $"The copy '{Describe(baseRelative)}' to clone is not there, or is not a regular file the SSH user can read (the server said: {Bounded(error)}).",
                "The earlier set is damaged: back up in full (-Full), and check it with Test-KvmBackup.", Describe(baseRelative));
        }
        if (result.ExitCode == ServerScripts.TargetExists)
        {
            throw new BackupException(ErrorIds.StorageFailed, BackupErrorCategory.ResourceExists,
                $"'{Describe(newRelative)}' already exists: the clone is not made over it.",
                "Remove what is there (a leftover of an interrupted run), then back up again.", Describe(newRelative));
        }
        if (result.ExitCode != 0)
        {
            if (error.Contains("No space left", StringComparison.Ordinal) || error.Contains("Disk quota exceeded", StringComparison.Ordinal))
            {
                throw new BackupException(ErrorIds.DestinationFull, BackupErrorCategory.WriteError,
                    $"Cloning '{Describe(baseRelative)}' into '{Describe(newRelative)}' on the server failed: {Bounded(error)}.",
                    "Free space at the destination or choose another one, then back up again.", Describe(newRelative));
            }
            throw new BackupException(ErrorIds.SshCommandFailed, BackupErrorCategory.InvalidResult,
                $"Cannot clone '{Describe(baseRelative)}' into '{Describe(newRelative)}' on the server (exit code {result.ExitCode}): {Bounded(error)}.",
                "The server needs a POSIX sh with GNU cp and stat for the SSH user (an SFTP-only account is not enough); check its storage, then back up again.", Location);
        }
        return ParseClone(result.StandardOutput, Describe(newRelative));
    }

    /// <summary>The clone script's answer: exactly how the file was made, then its size and allocated 512-byte
    /// blocks. A local copy went through the blocks it allocated (at most its size); a reflink through none.</summary>
    internal static CloneResult ParseClone(string output, string where)
    {
        var lines = output.Length <= 200 ? output.TrimEnd('\n').Split('\n') : [];
        if (lines.Length == 2 && lines[0] is FileClone.Reflink or FileClone.LocalCopy
            && lines[1].Split(' ') is [var sizeText, var blocksText]
            && long.TryParse(sizeText, NumberStyles.None, CultureInfo.InvariantCulture, out var size)
            && long.TryParse(blocksText, NumberStyles.None, CultureInfo.InvariantCulture, out var blocks) && blocks <= long.MaxValue / 512)
            return new CloneResult(lines[0], size, lines[0] == FileClone.Reflink ? 0 : Math.Min(size, blocks * 512));
        throw new BackupException(ErrorIds.UnparsableOutput, BackupErrorCategory.ParserError,
            $"The server's answer to cloning '{where}' is not what the module asks for (output: '{Bounded(output.Trim())}').",
            "Check that sh, GNU cp and stat work on the server for the SSH user; remove the new file there, then back up again.", where);
    }

    /// <summary>Writes into a file the server holds (a clone) in place; see <see cref="SshStoreFileWriter.OpenExistingAsync"/>.</summary>
    public async Task<IStoreFileWriter> OpenForWriteAsync(string relativePath, CancellationToken ct) =>
        await SshStoreFileWriter.OpenExistingAsync(TakeConnection(), RemotePath(relativePath), ct, ReleaseAsync).ConfigureAwait(false);

    public async Task<IStoreFileReader> OpenReadAsync(string relativePath, CancellationToken ct) =>
        await SshStoreFileReader.OpenAsync(new SftpConnection(_ssh, _reconnect), RemotePath(relativePath), ct).ConfigureAwait(false);

    public async Task RenameAsync(string from, string to, CancellationToken ct)
    {
        var source = RemotePath(from);
        var target = RemotePath(to);
        var renamedFolder = await RunAsync(async (session, retried) =>
        {
            try
            {
                await session.PosixRenameAsync(source, target, ct).ConfigureAwait(false);
            }
            catch (SftpStatusException ex) when (retried && ex.Status == SftpStatusCode.NoSuchFile)
            {
                // The first attempt may have renamed before its connection broke.
                if (await session.LStatAsync(target, ct).ConfigureAwait(false) is null)
                    throw;
            }
            var renamed = await session.LStatAsync(target, ct).ConfigureAwait(false);
            if (renamed is { IsRegularFile: true })
                await SyncRenamedFileAsync(session, target, ct).ConfigureAwait(false);
            return renamed is { IsDirectory: true };
        }, ct).ConfigureAwait(false);
        if (renamedFolder)
            await SyncFolderAsync(Parent(target), ct).ConfigureAwait(false);
    }

    public Task DeleteAsync(string relativePath, bool recursive, CancellationToken ct) =>
        RunAsync(async (session, _) =>
        {
            await DeleteTreeAsync(session, RemotePath(relativePath), recursive, ct).ConfigureAwait(false);
            return true;
        }, ct);

    public async Task<IReadOnlyList<string>> SegmentDigestsAsync(string relativePath, long segmentSize, IReadOnlyList<long> segmentIndexes,
        CancellationToken ct)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(segmentSize);
        var path = ScriptPath(RemotePath(relativePath));
        var blockSize = DdBlockSize(segmentSize);
        var digests = new Dictionary<long, string>(segmentIndexes.Count);
        foreach (var batch in segmentIndexes.Distinct().Chunk(SegmentsPerCommand))
        {
            string[] arguments = [path, blockSize.ToString(CultureInfo.InvariantCulture), (segmentSize / blockSize).ToString(CultureInfo.InvariantCulture),
                .. batch.Select(index => index.ToString(CultureInfo.InvariantCulture))];
            // Reading back a whole disk on the server takes as long as its data: the long-work time limit.
            var result = await RunScriptAsync(ServerScripts.SegmentDigests, arguments, ct, Host.ToolTimeouts.LongWork).ConfigureAwait(false);
            if (result.ExitCode == SegmentScriptFileMissing)
            {
                throw new BackupException(ErrorIds.PathNotFound, BackupErrorCategory.ObjectNotFound,
                    $"Cannot read '{Describe(relativePath)}' on the server to verify it: {result.StandardError.Trim()}.",
                    "Check that the file is there and readable by the SSH user.", Describe(relativePath));
            }
            if (result.ExitCode != 0)
                throw CommandFailed("compute the digests of", relativePath, result);
            var batchDigests = ParseSegmentDigests(result.StandardOutput, batch, Describe(relativePath), out var tool);
            for (var i = 0; i < batch.Length; i++)
                digests[batch[i]] = batchDigests[i];
            DigestTool = tool;
        }
        return segmentIndexes.Select(index => digests[index]).ToList();
    }

    public async Task<IReadOnlyList<long>> FindNonZeroAsync(string relativePath, IReadOnlyList<(long Offset, long Length)> ranges, CancellationToken ct)
    {
        var path = ScriptPath(RemotePath(relativePath));
        var found = new List<long>();
        foreach (var batch in ranges.Chunk(RangesPerCommand))
        {
            string[] arguments = [path, .. batch.SelectMany(r => new[] { r.Offset.ToString(CultureInfo.InvariantCulture), r.Length.ToString(CultureInfo.InvariantCulture) })];
            // Holes cost nothing with a Python (at memory speed with cmp); data the server put there its disk's speed: the long-work limit.
            var result = await RunScriptAsync(ZeroCheckScript, arguments, ct, Host.ToolTimeouts.LongWork).ConfigureAwait(false);
            if (result.ExitCode == SegmentScriptFileMissing)
            {
                throw new BackupException(ErrorIds.PathNotFound, BackupErrorCategory.ObjectNotFound,
                    $"Cannot read '{Describe(relativePath)}' on the server to verify it: {result.StandardError.Trim()}.",
                    "Check that the file is there and readable by the SSH user.", Describe(relativePath));
            }
            if (result.ExitCode != 0)
                throw CommandFailed("read back", relativePath, result);
            found.AddRange(ParseNonZero(result.StandardOutput, batch, Describe(relativePath)));
        }
        return found;
    }

    public Task<StoreOwnership?> GetOwnershipAsync(string relativePath, CancellationToken ct) => RunAsync(async (session, _) =>
    {
        var path = RemotePath(relativePath);
        var attributes = await session.LStatAsync(path, ct).ConfigureAwait(false);
        // A server that does not say who owns it: taken for someone else's.
        return attributes is null ? null
            : new StoreOwnership(path, attributes.Uid ?? uint.MaxValue, attributes.Mode, attributes.IsDirectory, attributes.IsSymbolicLink);
    }, ct);

    /// <summary>The SSH login's uid on the server, as the owner of a file it creates (read by the write check).</summary>
    public async Task<uint> GetWriterIdAsync(CancellationToken ct)
    {
        if (_writerId is null)
            await CheckWritableAsync(ct).ConfigureAwait(false);
        return _writerId ?? uint.MaxValue;
    }

    public async ValueTask DisposeAsync()
    {
        List<SftpConnection> spare;
        lock (_spare)
        {
            _disposed = true;
            spare = _spare.ToList();
            _spare.Clear();
        }
        foreach (var connection in spare)
            await connection.DisposeAsync().ConfigureAwait(false);
        await _control.DisposeAsync().ConfigureAwait(false);
    }

    // ------------------------------------------------------------------ remote scripts

    /// <summary>The exit code of the read-back scripts for a file that is not there (<see cref="ServerScripts.FileMissing"/>).</summary>
    internal const int SegmentScriptFileMissing = ServerScripts.FileMissing;

    /// <summary>
    /// Prints "&lt;offset&gt; &lt;first&gt;" for each asked byte range of a file that holds a non-zero byte (first: the
    /// offset of the first; a range past the end of the file counts as one that does), then "done". Arguments: the
    /// file, then offset and length of each range. The check costs what the file's data costs, no more: with a Python
    /// (the same search as <see cref="ServerScripts.SegmentDigests"/>: python3, Oracle Linux 8's platform-python,
    /// python2.7; <c>ODAKVM_DIGEST_TOOL</c> forces one, and a tool that is no Python, such as <c>cmp</c>, forces
    /// cmp), SEEK_DATA and SEEK_HOLE find the data extents inside each range: a hole reads as zeros and is not read
    /// (the kernel would fill a zero page per 4 KiB of it: 2 s of CPU per GiB on the lab host), only the extents are
    /// read and compared with a buffer of zeros. A file system that cannot tell holes (EINVAL; or
    /// <c>ODAKVM_READ_HOLES</c> set, for tests) is read in full. Without a Python: GNU cmp compares each range with
    /// /dev/zero (holes read too); without GNU cmp, dd and tr read it, and a range with data is reported at its start.
    /// The file's pages are dropped from the cache before and after.
    /// </summary>
    internal const string ZeroCheckScript = """
        file=$1
        shift
        if [ ! -f "$file" ] || [ ! -r "$file" ]; then echo "no readable file $file" >&2; exit 2; fi
        dd if="$file" iflag=nocache count=0 2>/dev/null
        tool=${ODAKVM_DIGEST_TOOL:-}
        if [ -z "$tool" ]; then
          for candidate in python3 /usr/libexec/platform-python python2.7 python2; do
            if "$candidate" -c 'import errno, os' >/dev/null 2>&1; then tool=$candidate; break; fi
          done
        fi
        case $tool in
        ""|cmp|openssl|sha256sum) ;;
        *)
          "$tool" -c '
        import errno, os, sys
        path, numbers = sys.argv[1], [int(a) for a in sys.argv[2:]]
        seek_data, seek_hole = getattr(os, "SEEK_DATA", 3), getattr(os, "SEEK_HOLE", 4)
        tells_holes = [not os.environ.get("ODAKVM_READ_HOLES")]
        zeros = bytes(bytearray(1 << 20))
        def extents(fd, start, end):
            # The parts of [start, end) that can hold data: a hole reads as zeros.
            while start < end:
                if not tells_holes[0]:
                    yield start, end
                    return
                try:
                    data = os.lseek(fd, start, seek_data)
                    hole = os.lseek(fd, data, seek_hole)
                except OSError as e:
                    if e.errno == errno.ENXIO:
                        return
                    if e.errno != errno.EINVAL:
                        raise
                    tells_holes[0] = False
                    continue
                if data >= end:
                    return
                yield data, min(hole, end)
                start = hole
        def first_non_zero(fd, size, start, end):
            for at, stop in extents(fd, start, min(end, size)):
                os.lseek(fd, at, 0)
                while at < stop:
                    chunk = os.read(fd, min(stop - at, len(zeros)))
                    if not chunk:
                        return at
                    if chunk != zeros[:len(chunk)]:
                        return at + len(chunk) - len(chunk.lstrip(b"\0"))
                    at += len(chunk)
            return max(start, size) if end > size else None
        fd = os.open(path, os.O_RDONLY)
        size = os.fstat(fd).st_size
        for i in range(0, len(numbers) - 1, 2):
            start, end = numbers[i], numbers[i] + numbers[i + 1]
            try:
                first = first_non_zero(fd, size, start, end)
            except (IOError, OSError) as e:
                sys.stderr.write("cannot read bytes %d to %d of %s: %s\n" % (start, end, path, e))
                sys.exit(3)
            if first is not None:
                sys.stdout.write("%d %d\n" % (start, first))
        ' "$file" "$@" || exit $?
          shift $#
          ;;
        esac
        gnu=; cmp -s -i 0:0 -n 0 /dev/null /dev/zero 2>/dev/null && gnu=1
        while [ $# -ge 2 ]; do
          off=$1 len=$2
          shift 2
          if [ -n "$gnu" ]; then
            said=$(cmp -i "$off:0" -n "$len" -- "$file" /dev/zero 2>&1)
            case $? in
              0) ;;
              1) byte=$(printf '%s\n' "$said" | sed -n 's/.*differ: [a-z]* \([0-9][0-9]*\).*/\1/p' | tail -n 1)
                 echo "$off $((off + ${byte:-1} - 1))" ;;
              *) echo "cannot read bytes $off to $((off + len)) of $file: $said" >&2; exit 3 ;;
            esac
          else
            n=$(dd if="$file" bs=4096 skip=$((off / 4096)) count=$(((len + 4095) / 4096)) 2>/dev/null | tr -d '\000' | head -c 1 | wc -c)
            [ "$n" -eq 0 ] || echo "$off $off"
          fi
        done
        dd if="$file" iflag=nocache count=0 2>/dev/null
        echo done
        """;

    /// <summary>The first non-zero offsets of the ranges the script reports, in the order asked. The script must
    /// have reached its end ("done"), and name only ranges that were asked.</summary>
    internal static IReadOnlyList<long> ParseNonZero(string output, IReadOnlyList<(long Offset, long Length)> ranges, string where)
    {
        var byOffset = new Dictionary<long, long>();
        var complete = false;
        foreach (var line in output.Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries))
        {
            var fields = line.Split(' ');
            if (line == "done")
            {
                complete = true;
            }
            else if (fields.Length == 2 && long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var offset)
                && long.TryParse(fields[1], NumberStyles.None, CultureInfo.InvariantCulture, out var first)
                && ranges.Any(r => r.Offset == offset && first >= offset && first < r.Offset + r.Length))
            {
                byOffset[offset] = first;
            }
            else
            {
                throw Garbled(output, where);
            }
        }
        if (!complete)
            throw Garbled(output, where);
        return ranges.Where(r => byOffset.ContainsKey(r.Offset)).Select(r => byOffset[r.Offset]).ToList();
    }

    private static BackupException Garbled(string output, string where) =>
        new(ErrorIds.UnparsableOutput, BackupErrorCategory.ParserError,
            $"The server's read-back of '{where}' did not end as it should (output: '{output.Trim()}').",
            "Check that dd, cmp (or tr), sed and sh work on the server.", where);

    /// <summary>Flushes a folder (its entries: a renamed folder) to disk. SFTP cannot fsync a folder, so sync(1)
    /// does it on the server; a sync too old to take a name flushes everything.</summary>
    internal const string SyncFolderScript = """sync "$1" 2>/dev/null || sync""";

    /// <summary>The digests in the order asked, from the answer of <see cref="ServerScripts.SegmentDigests"/>.</summary>
    internal static IReadOnlyList<string> ParseSegmentDigests(string output, IReadOnlyList<long> indexes, string where) =>
        ParseSegmentDigests(output, indexes, where, out _);

    /// <summary>
    /// The digests in the order asked, and the tool the server hashed with. The answer is untrusted, so it is taken
    /// only as exactly what the script prints: no longer than that can be, a first line "tool &lt;name&gt;" naming one of
    /// the tools it runs, then one line "&lt;index&gt; &lt;64 lower-case hex&gt;" for each asked index, in any order,
    /// each once, and nothing else.
    /// </summary>
    internal static IReadOnlyList<string> ParseSegmentDigests(string output, IReadOnlyList<long> indexes, string where, out string tool)
    {
        // "tool " and a path of up to 4096 characters; per segment an index of up to 19 digits, a space, 64 hex, a newline.
        var longest = 5 + 4096 + 1 + (long)indexes.Count * (19 + 1 + 64 + 1);
        var lines = output.Length <= longest ? output.Split('\n') : [];
        if (lines.Length > 0 && lines[^1].Length == 0)
            lines = lines[..^1];
        var asked = indexes.ToHashSet();
        var byIndex = new Dictionary<long, string>();
        tool = lines.Length > 0 && lines[0].StartsWith("tool ", StringComparison.Ordinal) ? KnownDigestTool(lines[0][5..]) ?? "" : "";
        var wrong = output.Length > longest ? $"{output.Length} characters, more than {asked.Count} digests take"
            : tool.Length == 0 ? "no 'tool' line first"
            : lines.Length - 1 != asked.Count ? $"{lines.Length - 1} lines of digests for {asked.Count} segments" : null;
        foreach (var line in wrong is null ? lines.Skip(1) : [])
        {
            var fields = line.Split(' ');
            if (fields.Length != 2 || !long.TryParse(fields[0], NumberStyles.None, CultureInfo.InvariantCulture, out var index)
                || !asked.Contains(index) || fields[1].Length != 64 || !fields[1].All(char.IsAsciiHexDigitLower) || !byIndex.TryAdd(index, fields[1]))
            {
                wrong = $"the line '{Bounded(line)}'";
                break;
            }
        }
        var missing = indexes.Where(index => !byIndex.ContainsKey(index)).Distinct().ToList();
        if (wrong is not null || missing.Count > 0)
        {
            throw new BackupException(ErrorIds.UnparsableOutput, BackupErrorCategory.ParserError,
                $"The server's digests of '{where}' are not what was asked ({wrong ?? "no digest for segment(s) " + string.Join(", ", missing.Take(10))}; output: '{Bounded(output.Trim())}').",
                "Check that sh, dd and python3, openssl or sha256sum work on the server for the SSH user, and that its login prints nothing.", where);
        }
        return indexes.Select(index => byIndex[index]).ToList();
    }

    /// <summary>The name of a tool <see cref="ServerScripts.SegmentDigests"/> runs ("python3", "platform-python",
    /// "python2.7", "openssl", "sha256sum"), from the path or name it printed; null for anything else.</summary>
    internal static string? KnownDigestTool(string printed)
    {
        var name = printed[(printed.LastIndexOf('/') + 1)..];
        return name is "openssl" or "sha256sum" or "platform-python"
            || (name.StartsWith("python", StringComparison.Ordinal) && name.Length <= 12 && name[6..].All(c => char.IsAsciiDigit(c) || c == '.'))
            ? name : null;
    }

    /// <summary>Up to 300 characters of what a server said, its control characters shown as \xNN: enough to see
    /// what went wrong, never a flood.</summary>
    private static string Bounded(string text)
    {
        var shown = string.Concat(text.Take(300).Select(c => char.IsControl(c) && c != '\n' ? $"\\x{(int)c:x2}" : c.ToString()));
        return text.Length > 300 ? shown + "..." : shown;
    }

    /// <summary>The largest power of two up to 1 MiB that divides the segment size, so dd reads whole segments.</summary>
    internal static long DdBlockSize(long segmentSize)
    {
        var blockSize = 1L << 20;
        while (segmentSize % blockSize != 0)
            blockSize >>= 1;
        return blockSize;
    }

    /// <summary>
    /// Makes a file's rename durable without a shell: SFTP cannot fsync the folder, but a rename also changes the
    /// renamed file's inode (its ctime), so fsync of the file commits the journal transaction that holds the rename
    /// on ext4 and xfs, and btrfs logs the new name with the file.
    /// </summary>
    private static async Task SyncRenamedFileAsync(SftpClient session, string path, CancellationToken ct)
    {
        var handle = await session.OpenAsync(path, SftpOpenFlags.Read, null, ct).ConfigureAwait(false);
        try
        {
            await session.FsyncAsync(handle, ct).ConfigureAwait(false);
        }
        finally
        {
            if (session.Failure is null)
                await session.CloseAsync(handle, ct).ConfigureAwait(false);
        }
    }

    private async Task SyncFolderAsync(string folder, CancellationToken ct)
    {
        var result = await RunScriptAsync(SyncFolderScript, [ScriptPath(folder)], ct).ConfigureAwait(false);
        if (result.ExitCode != 0)
            throw CommandFailed("flush", folder, result);
    }

    /// <summary>Runs a script on the server; a lost connection is retried like the SFTP operations (the scripts only read or flush).</summary>
    private async Task<Host.ProcessResult> RunScriptAsync(string script, IReadOnlyList<string> arguments, CancellationToken ct, TimeSpan? timeout = null)
    {
        var attempts = 0;
        while (true)
        {
            try
            {
                return await _ssh.RunScriptAsync(script, arguments, ct, timeout).ConfigureAwait(false);
            }
            catch (BackupException ex) when (ex.ErrorId == ErrorIds.SshConnectionLost && attempts < _reconnect.Delays.Count)
            {
                await Task.Delay(_reconnect.Delays[attempts++], ct).ConfigureAwait(false);
            }
        }
    }

    private BackupException CommandFailed(string what, string path, Host.ProcessResult result) =>
        new(ErrorIds.SshCommandFailed, BackupErrorCategory.InvalidResult,
            $"Cannot {what} '{_ssh.Destination.WithPath(path)}' on the server (exit code {result.ExitCode}): {result.StandardError.Trim()}.",
            "The server needs a POSIX sh with dd, sha256sum (or python3 or openssl), nproc, xargs, sync, GNU cp and stat for the SSH user (an SFTP-only account is not enough).", Location);

    // ------------------------------------------------------------------ helpers

    /// <summary>Runs an operation on the shared session; when its connection is lost, connects again (see the
    /// policy) and runs it again, telling it so (<c>retried</c>).</summary>
    private async Task<T> RunAsync<T>(Func<SftpClient, bool, Task<T>> operation, CancellationToken ct)
    {
        var attempts = new ReconnectAttempts();
        var session = await _control.GetAsync(ct).ConfigureAwait(false);
        while (true)
        {
            try
            {
                return await operation(session, attempts.Used > 0).ConfigureAwait(false);
            }
            catch (BackupException ex) when (SftpConnection.IsConnectionProblem(ex) && session.Failure is not null)
            {
                session = await _control.ReconnectAsync(session, ex, attempts, ct).ConfigureAwait(false);
            }
        }
    }

    private async Task CreateOneFolderAsync(SftpClient session, string folder, CancellationToken ct)
    {
        var existing = await session.StatAsync(folder, ct).ConfigureAwait(false);
        if (existing is null)
        {
            try
            {
                await session.MakeDirectoryAsync(folder, FolderMode, ct).ConfigureAwait(false);
                // Explicitly: the server's umask may have taken bits away, and the contract is 0700 exactly.
                await session.SetStatAsync(folder, SftpAttributes.WithMode(FolderMode), ct).ConfigureAwait(false);
                return;
            }
            catch (SftpStatusException ex) when (ex.Status == SftpStatusCode.Failure)
            {
                // Made meanwhile by someone else (version 3 has no "already exists" status)?
                existing = await session.StatAsync(folder, ct).ConfigureAwait(false);
                if (existing is null)
                    throw;
            }
        }
        if (!existing.IsDirectory)
        {
            throw new BackupException(ErrorIds.PathNotWritable, BackupErrorCategory.ResourceExists,
                $"Cannot create the folder '{_ssh.Destination.WithPath(folder)}': a file of that name is there.",
                "Move or delete that file on the server, or choose another destination.", _ssh.Destination.WithPath(folder).ToString());
        }
    }

    private static async Task DeleteTreeAsync(SftpClient session, string path, bool recursive, CancellationToken ct)
    {
        var attributes = await session.LStatAsync(path, ct).ConfigureAwait(false);
        if (attributes is null)
            return;
        if (!attributes.IsDirectory)
        {
            await RemoveIfThereAsync(session, path, ct).ConfigureAwait(false);
            return;
        }
        if (recursive)
        {
            // The names come from the server: each is proven to lie in the folder being deleted.
            foreach (var entry in await session.ListDirectoryAsync(path, ct).ConfigureAwait(false))
                await DeleteTreeAsync(session, Paths.FileSystemPaths.JoinInside(path, entry.Name, "The server's listing"), recursive: true, ct).ConfigureAwait(false);
        }
        await session.RemoveDirectoryAsync(path, ct).ConfigureAwait(false);
    }

    private static async Task RemoveIfThereAsync(SftpClient session, string path, CancellationToken ct)
    {
        try
        {
            await session.RemoveAsync(path, ct).ConfigureAwait(false);
        }
        catch (SftpStatusException ex) when (ex.Status == SftpStatusCode.NoSuchFile)
        {
        }
    }

    private static StoreEntry ToEntry(string name, SftpAttributes attributes) =>
        new(name, attributes.IsDirectory, attributes.Size ?? 0, attributes.ModifiedTimeUtc ?? DateTime.UnixEpoch, attributes.Mode);

    /// <summary>The path on the server: the root joined with a store path ("vm/run/disk"), proven to stay under it.</summary>
    private string RemotePath(string relativePath)
    {
        var path = _root;
        foreach (var part in Parts(relativePath))
            path = Join(path, part);
        return path.Length == 0 ? "." : path;
    }

    private IEnumerable<string> Parts(string relativePath)
    {
        if (relativePath.Length > 0)
            Paths.FileSystemPaths.JoinInside(_root.Length == 0 ? "." : _root, relativePath, $"A path in the store '{Location}'");
        return relativePath.Split('/', StringSplitOptions.RemoveEmptyEntries);
    }

    private static string Join(string folder, string name) => Paths.FileSystemPaths.JoinChecked(folder, name);

    private static string Parent(string path)
    {
        var slash = path.TrimEnd('/').LastIndexOf('/');
        return slash < 0 ? "." : slash == 0 ? "/" : path[..slash];
    }

    private static string Name(string path) => path.TrimEnd('/')[(path.TrimEnd('/').LastIndexOf('/') + 1)..];

    /// <summary>A relative path as a script argument: "./" in front, so a name starting with '-' is never an option.</summary>
    private static string ScriptPath(string path) => path.StartsWith('/') ? path : "./" + path;
}
