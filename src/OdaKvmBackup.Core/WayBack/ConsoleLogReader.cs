using System.Text;

namespace OdaKvmBackup.Core.WayBack;

/// <summary>
/// Reads a boot test's console log as the guest writes it: each read takes only what was appended since the last
/// one, and at most <see cref="CapBytes"/> in all (a guest that writes without end is read no further); only the
/// last <see cref="WindowChars"/> characters are kept, for the pattern a guest without an agent must show and for
/// the lines quoted in an error.
/// </summary>
internal sealed class ConsoleLogReader(string path)
{
    /// <summary>How much of a console log is read at most.</summary>
    public const long CapBytes = 16L << 20;

    /// <summary>How much of what was read is kept.</summary>
    public const int WindowChars = 64 * 1024;

    private readonly Decoder _decoder = new UTF8Encoding(false).GetDecoder();
    private readonly StringBuilder _window = new();
    private readonly byte[] _buffer = new byte[64 * 1024];
    private readonly char[] _chars = new char[64 * 1024 + 4];

    public string Path { get; } = path;

    /// <summary>Bytes read so far: where the next read starts.</summary>
    public long Offset { get; private set; }

    /// <summary>True once <see cref="CapBytes"/> were read: the rest is not read.</summary>
    public bool Capped => Offset >= CapBytes;

    /// <summary>The last characters read (at most <see cref="WindowChars"/>).</summary>
    public string Window => _window.ToString();

    /// <summary>Reads what was appended since the last call; true when there was something.</summary>
    public bool ReadNew()
    {
        if (Capped || !File.Exists(Path))
            return false;
        using var stream = new FileStream(Path, FileMode.Open, FileAccess.Read, FileShare.ReadWrite | FileShare.Delete, 1, FileOptions.None);
        var end = Math.Min(stream.Length, CapBytes);
        if (end <= Offset)
            return false;
        stream.Position = Offset;
        while (Offset < end)
        {
            var read = stream.Read(_buffer, 0, (int)Math.Min(_buffer.Length, end - Offset));
            if (read == 0)
                break;
            Offset += read;
            var count = _decoder.GetChars(_buffer, 0, read, _chars, 0, flush: false);
            _window.Append(_chars, 0, count);
            if (_window.Length > WindowChars)
                _window.Remove(0, _window.Length - WindowChars);
        }
        return true;
    }

    /// <summary>The last lines that are not blank, joined with " | ", for an error message.</summary>
    public string Tail(int lines = 8)
    {
        var last = Window.Split('\n').Select(l => l.Trim()).Where(l => l.Length > 0).TakeLast(lines).ToList();
        var text = last.Count == 0 ? "(nothing on the console)" : string.Join(" | ", last);
        return Capped ? text + $" (the console wrote more than {CapBytes >> 20} MiB; what came after was not read)" : text;
    }
}
