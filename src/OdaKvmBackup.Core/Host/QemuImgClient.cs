using System.Text.Json;

namespace OdaKvmBackup.Core.Host;

/// <summary>What `qemu-img info --output=json` says of one image. <paramref name="DataFile"/>: a qcow2's external
/// data file (format-specific data-file), which holds its data instead of the qcow2 file itself.</summary>
internal sealed record ImageInfo(string Format, long VirtualSize, long ActualSize, string? BackingFile, string? BackingFormat, string? DataFile = null);

/// <summary>The kinds of file `stat` tells apart (the file type bits of st_mode).</summary>
internal enum UnixFileKind
{
    Fifo = 0x1000, CharacterDevice = 0x2000, Directory = 0x4000, BlockDevice = 0x6000, RegularFile = 0x8000, SymbolicLink = 0xA000, Socket = 0xC000,
}

/// <summary>qemu-img, for what virsh cannot do: reading image headers and committing a shut-off domain's overlay.</summary>
internal sealed class QemuImgClient
{
    private const string Program = "qemu-img";
    private readonly IProcessRunner _runner;

    public QemuImgClient(IProcessRunner runner) => _runner = runner;

    /// <summary>-U: the image may be open by a running QEMU; we only read its header.</summary>
    public async Task<ImageInfo> InfoAsync(string path, CancellationToken ct)
    {
        var result = await RunAsync(["info", "--output=json", "-U", path], ct).ConfigureAwait(false);
        return ParseInfo(result.StandardOutput);
    }

    /// <summary>
    /// qemu-img info of an image whose format is known (<c>-f</c>): qemu-img reads it as that format and never probes
    /// it, and it opens neither its backing file nor its data file (it only names them). <paramref name="shared"/>
    /// adds -U, needed only for an image a running QEMU may hold; a backup copy or a restored file needs none.
    /// </summary>
    public async Task<ImageInfo> InfoAsync(string path, string format, bool shared, CancellationToken ct)
    {
        string[] args = shared ? ["info", "--output=json", "-f", format, "-U", path] : ["info", "--output=json", "-f", format, path];
        return ParseInfo((await RunAsync(args, ct).ConfigureAwait(false)).StandardOutput);
    }

    /// <summary>The kind of file at a path, without following a symbolic link (`stat --format=%f`, the raw mode in
    /// hex): asked before qemu-img opens a file it was not given by the host, since qemu-img waits for ever on a FIFO
    /// and reads a device as readily as a file. Null when there is no such file.</summary>
    public async Task<UnixFileKind?> FileKindAsync(string path, CancellationToken ct)
    {
        var result = await _runner.RunAsync("stat", ["--format=%f", "--", path], null, ct, null).ConfigureAwait(false);
        if (result.ExitCode != 0)
            return null;
        return int.TryParse(result.StandardOutput.Trim(), System.Globalization.NumberStyles.HexNumber, System.Globalization.CultureInfo.InvariantCulture, out var mode)
            ? (UnixFileKind)(mode & 0xF000)
            : throw new BackupException(ErrorIds.UnparsableOutput, BackupErrorCategory.ParserError, $"stat returned '{result.StandardOutput.Trim()}' for '{path}', not a file mode.", null, path);
    }

    /// <summary>Writes an overlay's data into its backing file (offline: the domain must be shut off).</summary>
    public async Task CommitAsync(string overlay, CancellationToken ct) =>
        await RunAsync(["commit", overlay], ct, ToolTimeouts.LongWork).ConfigureAwait(false);

    /// <summary>Creates a qcow2 overlay on top of <paramref name="backingFile"/>: the backing file is only read,
    /// never opened for writing, and everything written to the overlay stays in the overlay.</summary>
    public async Task CreateOverlayAsync(string overlay, string backingFile, string backingFormat, CancellationToken ct) =>
        await RunAsync(["create", "-q", "-f", "qcow2", "-b", backingFile, "-F", backingFormat, overlay], ct).ConfigureAwait(false);

    /// <summary>The same overlay on a backing file that was inspected already: -u and the backing file's virtual
    /// size, so that qemu-img never opens it; only QEMU does, through the chain the domain's definition spells out.</summary>
    public async Task CreateOverlayAsync(string overlay, string backingFile, string backingFormat, long virtualSize, CancellationToken ct) =>
        await RunAsync(["create", "-q", "-f", "qcow2", "-b", backingFile, "-F", backingFormat, "-u", overlay,
            virtualSize.ToString(System.Globalization.CultureInfo.InvariantCulture)], ct).ConfigureAwait(false);

    /// <summary>`qemu-img check` (read-only: without -r it never writes): null when the image has no errors, else
    /// what qemu-img said. Leaked clusters only waste space and are not an error here.</summary>
    public async Task<string?> CheckAsync(string path, string format, CancellationToken ct)
    {
        var result = await _runner.RunAsync(Program, ["check", "-U", "-f", format, path], null, ct, null).ConfigureAwait(false);
        return result.ExitCode switch
        {
            0 or 3 => null,
            2 => "qemu-img check found corruptions: " + Summary(result),
            _ => $"qemu-img check could not check it (exit code {result.ExitCode}): " + Summary(result),
        };
    }

    private static string Summary(ProcessResult result) =>
        string.Join(" ", (result.StandardOutput + "\n" + result.StandardError).Split('\n', StringSplitOptions.RemoveEmptyEntries | StringSplitOptions.TrimEntries).Take(6));

    public static ImageInfo ParseInfo(string json)
    {
        try
        {
            using var doc = JsonDocument.Parse(json);
            var root = doc.RootElement;
            string? Text(string name) => root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.String ? v.GetString() : null;
            long Number(string name) => root.TryGetProperty(name, out var v) && v.ValueKind == JsonValueKind.Number ? v.GetInt64() : 0;
            string? dataFile = null;
            if (root.TryGetProperty("format-specific", out var specific) && specific.ValueKind == JsonValueKind.Object
                && specific.TryGetProperty("data", out var data) && data.ValueKind == JsonValueKind.Object
                && data.TryGetProperty("data-file", out var file) && file.ValueKind == JsonValueKind.String)
                dataFile = file.GetString();
            return new ImageInfo(Text("format") ?? "", Number("virtual-size"), Number("actual-size"),
                Text("full-backing-filename") ?? Text("backing-filename"), Text("backing-filename-format"), dataFile);
        }
        catch (JsonException ex)
        {
            throw new BackupException(ErrorIds.UnparsableOutput, BackupErrorCategory.ParserError,
                $"qemu-img info returned output that is not JSON: {ex.Message}", null, null, ex);
        }
    }

    private async Task<ProcessResult> RunAsync(string[] args, CancellationToken ct, TimeSpan? timeout = null)
    {
        var result = await _runner.RunAsync(Program, args, null, ct, timeout).ConfigureAwait(false);
        if (result.ExitCode != 0)
        {
            throw new BackupException(ErrorIds.QemuImgFailed, BackupErrorCategory.InvalidResult,
                $"qemu-img {args[0]} failed with exit code {result.ExitCode}: {result.StandardError.Trim()}",
                null, args[^1]);
        }
        return result;
    }
}
